"""Semantic segmentation by MAE's protocol: UperNet over a GPA / ViTMAE / ViT encoder ([`GPABackbone`] with BEiT's
four-scale neck), layer-wise lr decay, mmsegmentation's warmup + poly schedule, sliding-window inference and mIoU.

MAE's recipe is mmsegmentation's ``configs/mae/upernet_mae-base_fp16_8x2_512x512_160k_ade20k.py`` (the tool MAE's
paper and GPA's report ADE20K with). Where it differs from the BEiT code MAE's paper cites
(``semantic_segmentation/configs/beit/upernet/upernet_beit_base_12_512_slide_160k_ade20k_pt2ft.py``): lr 1e-4
against BEiT's 3e-5 (BEiT's is for an intermediate-fine-tuned model; 7e-4 from self-supervised weights), layer
decay 0.65 against 0.9, no relative position bias (MAE keeps absolute position embeddings, interpolated to 512),
fp16 with dynamic loss scaling against fp32, and the same batch 16 (8 GPUs x 2), 160k iterations, 1,500 linear
warmup iterations, poly decay, drop path 0.1, weight decay 0.05, crops of 512 after a 0.5-2.0 random rescale and
slide inference at 512 with stride 341.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..configuration_gpa import GPAConfig, default_out_indices
from ..data.segmentation import IGNORE_INDEX
from .finetune import param_groups_layer_decay, vit_layer_id


@dataclass(frozen=True)
class SegmentationRecipe:
    """Fine-tuning settings of UperNet over a plain ViT; every field is a flag of run_semantic_segmentation.py."""

    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    drop_path: float = 0.1
    warmup_steps: int = 1500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    per_device_train_batch_size: int = 2
    total_batch_size: int = 16
    max_steps: int = 160_000
    crop_size: int = 512
    image_scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    stride: int = 341
    auxiliary_loss_weight: float = 0.4
    decode_channels: int = 768
    auxiliary_channels: int = 256

    def to_dict(self) -> dict:
        return asdict(self)


SEGMENTATION_RECIPES = {"mae": SegmentationRecipe()}


def upernet_config(
    backbone_config: GPAConfig, id2label: dict[int, str], recipe: SegmentationRecipe, out_indices: list[int] | None
):
    """``UperNetConfig`` over ``backbone_config`` with the neck, drop path and the FCN auxiliary head of ``recipe``."""
    from transformers import UperNetConfig

    backbone_config = GPAConfig.from_dict(
        {
            **backbone_config.to_dict(),
            "add_fpn": True,
            "drop_path_rate": recipe.drop_path,
            "out_indices": out_indices or default_out_indices(backbone_config.num_hidden_layers),
            "out_features": None,
        }
    )
    return UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=recipe.decode_channels,
        use_auxiliary_head=True,
        auxiliary_loss_weight=recipe.auxiliary_loss_weight,
        auxiliary_channels=recipe.auxiliary_channels,
        loss_ignore_index=IGNORE_INDEX,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
    )


def upernet_for_segmentation(
    model_name_or_path: str | None,
    id2label: dict[int, str],
    recipe: SegmentationRecipe,
    out_indices: list[int] | None = None,
    config: GPAConfig | None = None,
):
    """``UperNetForSemanticSegmentation`` over a GPA, ViTMAE or ViT checkpoint's encoder (a random one from
    ``config`` when ``model_name_or_path`` is None); the neck and heads start new."""
    from transformers import UperNetForSemanticSegmentation

    from ..modeling_gpa import GPABackbone

    pretrained = None
    if model_name_or_path is not None:
        pretrained = GPABackbone.from_pretrained(model_name_or_path, out_indices=out_indices)
        config = pretrained.config
    model = UperNetForSemanticSegmentation(upernet_config(config, id2label, recipe, out_indices))
    if pretrained is not None:
        weights = {key: value for key, value in pretrained.state_dict().items() if key.startswith("vit.")}
        missing, unexpected = model.backbone.load_state_dict(weights, strict=False)
        if unexpected or any(key.startswith("vit.") for key in missing):
            raise ValueError(
                f"{model_name_or_path!r} does not fit the backbone: missing {missing}, unexpected {unexpected}."
            )
    return model


def segmentation_param_groups(model: nn.Module, recipe: SegmentationRecipe, learning_rate: float) -> list[dict]:
    """mmsegmentation's ``LayerDecayOptimizerConstructor`` for a ViT: ``lr * layer_decay ** (N + 1 - layer_id)`` with
    layer id 0 for the embeddings, ``i + 1`` for block ``i`` and ``N + 1`` for the neck and heads; no weight decay on
    1-D parameters, the position table and the CLS token."""
    num_layers = model.config.backbone_config.num_hidden_layers
    return param_groups_layer_decay(
        model,
        learning_rate,
        weight_decay=recipe.weight_decay,
        layer_decay=recipe.layer_decay,
        num_layers=num_layers,
        layer_id_of=lambda name: (
            vit_layer_id(name.removeprefix("backbone."), num_layers)
            if name.startswith("backbone.vit.")
            else num_layers + 1
        ),
    )


def poly_schedule(optimizer, recipe: SegmentationRecipe, max_steps: int, warmup_steps: int):
    """mmsegmentation's ``poly`` policy with linear warmup: ``(1 - t / T) ** power``, times ``1 - (1 - t / w)(1 -
    warmup_ratio)`` during the first ``w`` steps."""

    def factor(step: int) -> float:
        decay = max(1.0 - step / max_steps, 0.0) ** recipe.poly_power
        if step < warmup_steps:
            decay *= 1.0 - (1.0 - step / warmup_steps) * (1.0 - recipe.warmup_ratio)
        return decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """mmsegmentation's slide windows along one side: starts ``0, stride, ...``, the last one moved back to end at
    ``size`` (one window of ``size`` when it is below ``crop``)."""
    count = max(math.ceil((size - crop) / stride), 0) + 1
    return sorted({max(min(index * stride, size - crop), 0) for index in range(count)})


@torch.no_grad()
def slide_inference(model: nn.Module, pixel_values: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """(B, C, H, W) pixels -> (B, num_labels, H, W) logits averaged over ``crop`` windows every ``stride`` pixels.

    Each window runs for the whole batch at once; a window past a side smaller than ``crop`` is padded with zeros
    to a multiple of the patch size, and its logits cropped back.
    """
    height, width = pixel_values.shape[-2:]
    patch = model.config.backbone_config.patch_size
    logits = counts = None
    for top in window_starts(height, crop, stride):
        for left in window_starts(width, crop, stride):
            window = pixel_values[..., top : top + crop, left : left + crop]
            window_height, window_width = window.shape[-2:]
            padded = nn.functional.pad(window, (0, -window_width % patch, 0, -window_height % patch))
            window_logits = model(pixel_values=padded).logits[..., :window_height, :window_width]
            if logits is None:
                logits = window_logits.new_zeros(*window_logits.shape[:2], height, width)
                counts = window_logits.new_zeros(1, 1, height, width)
            logits[..., top : top + window_height, left : left + window_width] += window_logits
            counts[..., top : top + window_height, left : left + window_width] += 1
    return logits / counts


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module, dataloader, num_labels: int, crop: int, stride: int, metric=None
) -> dict[str, float | list[float]]:
    """mIoU, per-class IoU and pixel accuracy of ``model`` on batches of ``pixel_values`` and ``labels``: slide
    inference, logits resized (bilinear) to the label map's size, the offline ``mean_iou`` module."""
    from .metric_loading import load_metric

    metric = metric or load_metric("mean_iou")
    model.eval()
    device = next(model.parameters()).device
    for batch in dataloader:
        logits = slide_inference(model, batch["pixel_values"].to(device), crop, stride)
        labels = batch["labels"]
        logits = nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        metric.add_batch(predictions=logits.argmax(1).cpu().numpy(), references=labels.numpy())
    result = metric.compute(num_labels=num_labels, ignore_index=IGNORE_INDEX)
    return {
        "mean_iou": result["mean_iou"],
        "mean_accuracy": result["mean_accuracy"],
        "overall_accuracy": result["overall_accuracy"],
        "per_category_iou": [float(value) for value in result["per_category_iou"]],
    }


def segmentation_trainer_class():
    """``SegmentationTrainer``: Trainer with the recipe's layer-decay AdamW and poly schedule, whose ``evaluate`` is
    slide inference + mIoU (imported lazily: Trainer pulls in accelerate)."""
    from transformers import Trainer

    class SegmentationTrainer(Trainer):
        def __init__(self, *args, recipe: SegmentationRecipe, **kwargs):
            super().__init__(*args, **kwargs)
            self.recipe = recipe

        def create_optimizer(self, model=None) -> torch.optim.Optimizer:
            if self.optimizer is None:
                groups = segmentation_param_groups(self.model, self.recipe, self.args.learning_rate)
                betas = (self.args.adam_beta1, self.args.adam_beta2)
                self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate, betas=betas)
            return self.optimizer

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None:
                optimizer = self.optimizer if optimizer is None else optimizer
                warmup = self.args.get_warmup_steps(num_training_steps)
                self.lr_scheduler = poly_schedule(optimizer, self.recipe, num_training_steps, warmup)
            return self.lr_scheduler

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
            dataloader = self.get_eval_dataloader(eval_dataset)
            num_labels = self.model.config.num_labels
            result = evaluate_segmentation(
                self.model, dataloader, num_labels, self.recipe.crop_size, self.recipe.stride
            )
            id2label = self.model.config.id2label
            metrics = {
                f"{metric_key_prefix}_{key}": value for key, value in result.items() if key != "per_category_iou"
            }
            metrics.update(
                {f"{metric_key_prefix}_iou_{id2label[i]}": iou for i, iou in enumerate(result["per_category_iou"])}
            )
            self.log(metrics)
            return metrics

    return SegmentationTrainer
