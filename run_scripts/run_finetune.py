#!/usr/bin/env python
"""End-to-end fine-tuning of a GPA, ViTMAE, ViT or Swin checkpoint for image classification, by MAE's recipe.

    python run_scripts/run_finetune.py --model_name_or_path outputs/gpa --dataset_name fashion_mnist \\
        --output_dir outputs/finetune                      # --recipe mae: MAE's recipe for the checkpoint's size

``--recipe`` resolves every setting (``modeling_gpa.evaluation.recipes``); any flag given wins over it:

- ``mae`` (default): facebookresearch/mae's ``main_finetune.py`` with ``FINETUNE.md``'s values, ``--model_size``
  (default: what the checkpoint's depth and width say; ViT-B's for other shapes) base / large / huge: drop path
  0.1 / 0.2 / 0.3, layer decay 0.65 / 0.75 / 0.75, blr 5e-4 / 1e-3 / 1e-3, 100 / 50 / 50 epochs. Total batch 1024
  (``--per_device_train_batch_size`` the micro-batch, gradient accumulation the rest),
  lr = blr * total batch / 256, AdamW (weight decay 0.05) with timm's layer-wise decay groups, 5 warm-up epochs then
  cosine to min lr 1e-6, no gradient clipping; timm's ``create_transform`` (RandomResizedCrop 0.08-1 bicubic, flip,
  RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25), mixup 0.8 / CutMix 1.0 with smoothing 0.1 (timm's
  ``Mixup`` and ``SoftTargetCrossEntropy``); average pooling into a new ``fc_norm`` (``--pooling cls``: the CLS
  token); head from trunc_normal(std 2e-5); evaluation crop 224/256; top-1 and top-5 after every epoch.
- ``gpa_released``: the GPA release README's fine-tuning command: MAE's ViT-B recipe with layer decay 0.8.
- ``plain``: Trainer's defaults (lr 5e-5, batch 8, 3 epochs, gradient clipping 1.0), layer decay 0.75, the
  pretraining crop and flip only, CLS pooling, head std 0.02.

A ViT trains as timm's ``VisionTransformer`` (drop path, pooling) inside ``TimmWrapperForImageClassification`` (saved
by ``save_pretrained``, loaded by ``AutoModelForImageClassification``), built from the checkpoint's encoder
(``modeling_gpa.tools.convert``); position embeddings are resized bicubically for another ``--image_size``. A Swin
(such as run_mim.py's) trains as ``SwinForImageClassification`` with its own drop path and SimMIM's layer ids. Every
Trainer flag works. Writes ``<output_dir>/results.json`` (last and best top-1 / top-5, each epoch's) and prints a
summary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from PIL import ImageOps
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from transformers import AutoConfig, HfArgumentParser, SwinForImageClassification, Trainer, TrainingArguments

from modeling_gpa.command_line import TRUST_REMOTE_CODE_HELP, check_checkpoint, exit_on_bad_input
from modeling_gpa.data import collate_pixel_values_and_labels, with_pixel_values
from modeling_gpa.data.pipeline import PixelNormalizer, TrainCrop, to_num_channels
from modeling_gpa.evaluation import (
    MODEL_SIZES,
    RECIPES,
    TIMM_POOLINGS,
    FinetuneRecipe,
    finetune_recipe,
    load_labelled_splits,
    load_vit,
    param_groups_layer_decay,
    report_results,
    resolve_model_size,
    timm_classifier,
    timm_param_groups,
    top1_top5,
)
from modeling_gpa.evaluation.features import SWIN_HAS_NO_CLS, is_swin
from modeling_gpa.training.device_inputs import DeviceDecodingMixin, PixelNormalizationMixin, UnreadableImagesMixin
from modeling_gpa.training.flag_ranges import TRAINING_FLAG_RANGES, check_flag_ranges
from modeling_gpa.training.seeding import ProcessSeedsMixin

# MAE's per-GPU batch (main_finetune.py's --batch_size default): the micro-batch when the recipe's total is larger.
DEFAULT_MICRO_BATCH = 64


@dataclass
class FinetuneArguments:
    """Checkpoint, dataset (as run_pretrain.py) and the recipe; a recipe field left unset takes the recipe's value."""

    model_name_or_path: str = field(metadata={"help": "GPA, ViTMAE, ViT or Swin checkpoint directory."})
    recipe: str = field(default="mae", metadata={"help": f"One of {', '.join(RECIPES)}."})
    model_size: str | None = field(
        default=None,
        metadata={
            "help": (
                f"MAE's values for ViT-{'/'.join(MODEL_SIZES)}; default: the size the checkpoint's depth and width "
                "say (base for other shapes)."
            )
        },
    )
    dataset_name: str | None = field(default=None, metadata={"help": "fashion_mnist, cluttered_fashion_mnist, ..."})
    dataset_config_name: str | None = None
    train_dir: str | None = field(default=None, metadata={"help": "Image folder, one subfolder per class."})
    validation_dir: str | None = None
    train_val_split: float = 0.15
    image_column_name: str | None = None
    label_column_name: str | None = field(default=None, metadata={"help": "Defaults to 'label' or 'labels'."})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache_dir: str | None = None
    image_size: int | None = field(default=None, metadata={"help": "Fine-tuning resolution (default: pretraining's)."})
    pooling: str | None = field(default=None, metadata={"help": f"{' or '.join(TIMM_POOLINGS)} (a Swin: avg)."})
    total_batch_size: int | None = field(default=None, metadata={"help": "Images per optimizer step (MAE: 1024)."})
    base_learning_rate: float | None = field(default=None, metadata={"help": "lr = blr * total batch / 256."})
    layer_decay: float | None = field(default=None, metadata={"help": "Layer-wise lr decay; 1.0 disables it."})
    drop_path: float | None = field(default=None, metadata={"help": "Drop path rate of the last block."})
    warmup_epochs: float | None = None
    min_lr: float | None = None
    head_init_std: float | None = None
    auto_augment: str | None = field(default=None, metadata={"help": "timm RandAugment policy; 'none' disables."})
    reprob: float | None = field(default=None, metadata={"help": "Random erasing probability."})
    remode: str | None = None
    recount: int | None = None
    mixup: float | None = field(default=None, metadata={"help": "Mixup alpha; 0 disables."})
    cutmix: float | None = field(default=None, metadata={"help": "CutMix alpha; 0 disables."})
    mixup_prob: float | None = None
    mixup_switch_prob: float | None = None
    label_smoothing: float | None = None
    trust_remote_code: bool = field(default=False, metadata={"help": TRUST_REMOTE_CODE_HELP})


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """[`TrainingArguments`] that keep ``pixel_values`` and ``labels``; the recipe sets the rest unless given."""

    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep `pixel_values` and `labels`."})

    def __post_init__(self):
        # Before anything loads: Transformers and torch would find a bad number only once training starts.
        check_flag_ranges(self, TRAINING_FLAG_RANGES)
        super().__post_init__()


class FinetuneTrainer(ProcessSeedsMixin, UnreadableImagesMixin, PixelNormalizationMixin, DeviceDecodingMixin, Trainer):
    """Trainer with layer-wise lr decay (timm's groups for a timm ViT, SimMIM's for a Swin), timm's Mixup/CutMix on
    the device and its losses, and a plain cross-entropy in evaluation. uint8 batches (the ``plain`` recipe's
    pipeline) are normalised on the device with the image processor's mean/std (``processing_class``)."""

    def __init__(self, *args, layer_decay: float, mixup: Mixup | None, label_smoothing: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_decay = layer_decay
        self.mixup = mixup
        if mixup is not None:
            # With mixup the smoothing is in the soft targets (timm's mixup_target).
            self.train_loss = SoftTargetCrossEntropy()
        elif label_smoothing > 0:
            self.train_loss = LabelSmoothingCrossEntropy(smoothing=label_smoothing)
        else:
            self.train_loss = nn.CrossEntropyLoss()

    @property
    def pixel_normalizer(self) -> PixelNormalizer:
        """uint8 -> float32 with the image processor's mean and std (a timm model's config has no channel count)."""
        if "_pixel_normalizer" not in self.__dict__:
            self._pixel_normalizer = PixelNormalizer(self.processing_class.image_mean, self.processing_class.image_std)
        return self._pixel_normalizer

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            arguments = dict(lr=self.args.learning_rate, weight_decay=self.args.weight_decay)
            if is_swin(model.config):
                groups = param_groups_layer_decay(model, layer_decay=self.layer_decay, **arguments)
            else:
                groups = timm_param_groups(model, layer_decay=self.layer_decay, **arguments)
            self.optimizer = torch.optim.AdamW(
                groups,
                lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
        return self.optimizer

    def get_eval_dataloader(self, eval_dataset=None):
        # MAE drops the last incomplete training batch (timm's Mixup also needs even ones) but evaluates every image.
        drop_last, self.args.dataloader_drop_last = self.args.dataloader_drop_last, False
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.args.dataloader_drop_last = drop_last

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        if model.training:
            if self.mixup is not None:
                pixel_values, labels = self.mixup(pixel_values, labels)
            loss_function = self.train_loss
        else:
            loss_function = nn.functional.cross_entropy
        outputs = model(pixel_values=pixel_values)
        loss = loss_function(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss


def explicit_flags(argv: list[str]) -> set[str]:
    """The ``--flag`` names given in ``argv`` (``--flag value`` or ``--flag=value``), without the dashes."""
    return {token[2:].split("=", 1)[0] for token in argv if token.startswith("--")}


def resolve_recipe(args: FinetuneArguments) -> FinetuneRecipe:
    """The recipe of ``--recipe`` / ``--model_size`` with every recipe flag given on the command line applied."""
    overrides = {name: getattr(args, name, None) for name in FinetuneRecipe.__dataclass_fields__ if name != "name"}
    recipe = finetune_recipe(args.recipe, args.model_size or "base").replace(**overrides)
    if recipe.auto_augment is not None and recipe.auto_augment.lower() == "none":
        recipe = dataclasses.replace(recipe, auto_augment=None)
    return recipe


def apply_recipe(recipe: FinetuneRecipe, training_args: TrainingArguments, given: set[str], num_train: int) -> dict:
    """Sets the recipe's Trainer settings that no flag gave; returns the resolved batch, lr and schedule.

    The total batch is ``per_device_train_batch_size * gradient_accumulation_steps * world_size``: without those
    flags the micro-batch is min(total / world size, 64) and accumulation makes up the recipe's total.
    """
    world = training_args.world_size
    if "gradient_accumulation_steps" in given and "per_device_train_batch_size" in given:
        total = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    else:
        total = recipe.total_batch_size
        if "per_device_train_batch_size" not in given:
            training_args.per_device_train_batch_size = max(1, min(total // world, DEFAULT_MICRO_BATCH))
        micro = training_args.per_device_train_batch_size * world
        if total % micro:
            raise ValueError(
                f"The total batch {total} is not a multiple of per-device batch x processes = {micro}: pass "
                "--per_device_train_batch_size (or --total_batch_size) so that it divides."
            )
        training_args.gradient_accumulation_steps = total // micro
    if "learning_rate" not in given:
        if recipe.base_learning_rate is not None:
            training_args.learning_rate = recipe.base_learning_rate * total / 256
        else:
            training_args.learning_rate = recipe.learning_rate
    if "num_train_epochs" not in given:
        training_args.num_train_epochs = recipe.epochs
    if "weight_decay" not in given:
        training_args.weight_decay = recipe.weight_decay
    if "max_grad_norm" not in given:
        training_args.max_grad_norm = recipe.max_grad_norm or 0.0
    if "warmup_steps" not in given:
        epochs = training_args.num_train_epochs
        warmup = recipe.warmup_epochs / epochs
        if warmup >= 1:
            raise ValueError(f"--warmup_epochs {recipe.warmup_epochs} must be fewer than the {epochs:g} epochs.")
        training_args.warmup_steps = warmup
    if "lr_scheduler_type" not in given:
        training_args.lr_scheduler_type = "cosine_with_min_lr" if recipe.min_lr > 0 else "cosine"
        training_args.lr_scheduler_kwargs = {"min_lr": recipe.min_lr} if recipe.min_lr > 0 else {}
    if "dataloader_drop_last" not in given and recipe.train_augment == "timm":
        training_args.dataloader_drop_last = True  # MAE's loader; timm's Mixup also needs even batches
    if "eval_strategy" not in given:
        training_args.eval_strategy = "epoch"
        training_args.do_eval = True
    if total > num_train:
        raise ValueError(f"The total batch {total} exceeds the {num_train} training images: pass --total_batch_size.")
    return {"total_batch_size": total, "learning_rate": training_args.learning_rate, "world_size": world}


def posterize(image, bits_to_keep: int, **_):
    """timm's posterize op, also at 0 bits: RandAugment's ``PosterizeIncreasing`` asks for 0 bits at magnitude 10,
    which Pillow 13 refuses; the Pillow MAE ran on kept no bit, a black image, and so does this."""
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return image.point(lambda _: 0)
    return ImageOps.posterize(image, bits_to_keep)


def use_zero_bit_posterize() -> None:
    """Points timm's posterize ops at [`posterize`]; RandAugment ops built afterwards use it."""
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = posterize


def train_transform(recipe: FinetuneRecipe, image_size: int, num_channels: int, mean, std):
    """PIL image -> (C, S, S) training input: timm's ``create_transform`` (float, normalised) or the pretraining crop
    (uint8, normalised on the device)."""
    if recipe.train_augment == "pretraining":
        return TrainCrop(image_size, num_channels, scale=recipe.crop_scale)
    use_zero_bit_posterize()
    transform = create_transform(
        image_size,
        is_training=True,
        scale=recipe.crop_scale,
        color_jitter=None,
        auto_augment=recipe.auto_augment,
        interpolation="bicubic",
        re_prob=recipe.reprob,
        re_mode=recipe.remode,
        re_count=recipe.recount,
        mean=tuple(mean),
        std=tuple(std),
    )
    return _ChannelsThen(num_channels, transform)


def eval_transform(recipe: FinetuneRecipe, image_size: int, num_channels: int, mean, std):
    """MAE's evaluation view (resize to size / crop_pct, bicubic, center crop; crop_pct 1 above 224 px), or ``None``
    for the pretraining pipeline's eval crop."""
    if recipe.eval_crop_pct is None:
        return None
    crop_pct = recipe.eval_crop_pct if image_size <= 224 else 1.0
    transform = create_transform(
        image_size, is_training=False, interpolation="bicubic", crop_pct=crop_pct, mean=tuple(mean), std=tuple(std)
    )
    return _ChannelsThen(num_channels, transform)


@dataclass
class _ChannelsThen:
    """The image in ``num_channels`` ("L" or "RGB") first, then a torchvision / timm transform."""

    num_channels: int
    transform: object

    def __call__(self, image):
        return self.transform(to_num_channels(image, self.num_channels))


def mixup_of(recipe: FinetuneRecipe, num_classes: int) -> Mixup | None:
    """timm's ``Mixup`` (per batch, MAE's mode) when the recipe mixes, else ``None``."""
    if recipe.mixup <= 0 and recipe.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=recipe.mixup,
        cutmix_alpha=recipe.cutmix,
        prob=recipe.mixup_prob,
        switch_prob=recipe.mixup_switch_prob,
        mode="batch",
        label_smoothing=recipe.label_smoothing,
        num_classes=num_classes,
    )


def build_model(args: FinetuneArguments, recipe: FinetuneRecipe, config, id2label: dict[int, str], image_size: int):
    """timm ViT classifier of the checkpoint (``TimmWrapperForImageClassification``), or a Swin classifier (which
    always pools by average: ``--pooling cls`` is refused, the ``plain`` recipe's CLS does not apply)."""
    if not is_swin(config):
        return timm_classifier(
            args.model_name_or_path,
            id2label,
            image_size=image_size,
            pooling=recipe.pooling,
            drop_path=recipe.drop_path,
            head_init_std=recipe.head_init_std,
        )
    if args.pooling == "cls":
        raise ValueError(SWIN_HAS_NO_CLS.replace("mean", "avg"))
    if image_size != config.image_size:
        raise ValueError(f"--image_size {image_size}: a Swin fine-tunes at its pretraining size {config.image_size}.")
    model = load_vit(
        SwinForImageClassification,
        args.model_name_or_path,
        encoder_prefix="swin.",
        trust_remote_code=args.trust_remote_code,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        ignore_mismatched_sizes=True,
        drop_path_rate=recipe.drop_path,
    )
    with torch.no_grad():
        nn.init.trunc_normal_(model.classifier.weight, std=recipe.head_init_std)
        nn.init.zeros_(model.classifier.bias)
    return model


def topk_metrics(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` for Trainer: top-1 and top-5 accuracy of the logits (timm's ``accuracy``) and how many
    images they cover."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return top1_top5(torch.as_tensor(logits), torch.as_tensor(labels)) | {"images": len(labels)}


def epoch_metrics(log_history: list[dict]) -> list[dict]:
    """Each evaluation Trainer logged: epoch, top-1, top-5, loss and images evaluated."""
    return [
        {
            "epoch": entry["epoch"],
            "top1_accuracy": entry["eval_top1_accuracy"],
            "top5_accuracy": entry["eval_top5_accuracy"],
            "eval_loss": entry["eval_loss"],
            "images": entry["eval_images"],
        }
        for entry in log_history
        if "eval_top1_accuracy" in entry
    ]


def parse(argv: list[str] | None) -> tuple[FinetuneArguments, FinetuneTrainingArguments, set[str]]:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((FinetuneArguments, FinetuneTrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return args, training_args, explicit_flags(argv)


def main(argv: list[str] | None = None) -> dict:
    args, training_args, given = parse(argv)
    args.seed = training_args.seed
    check_checkpoint(args.model_name_or_path, args.trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"No checkpoint config at {args.model_name_or_path!r}: pass --model_name_or_path a directory saved by "
            "run_pretrain.py, run_mim.py, ViTMAEForPreTraining or ViTModel."
        ) from error
    args.model_size = resolve_model_size(args.model_size, config, args.recipe, args.model_name_or_path)
    recipe = resolve_recipe(args)
    if not 0.0 < recipe.layer_decay <= 1.0:
        raise ValueError(f"--layer_decay={recipe.layer_decay} is invalid; allowed values: a number in (0, 1].")
    image_size = args.image_size or config.image_size
    data = load_labelled_splits(args, image_size, config.num_channels, args.model_name_or_path)
    model = build_model(args, recipe, config, data["id2label"], image_size)
    mean, std = data["processor"].image_mean, data["processor"].image_std
    train_crop = train_transform(recipe, image_size, config.num_channels, mean, std)
    train_dataset = with_pixel_values(data["splits"]["train"], train_crop, data["image_column"], data["label_column"])
    eval_crop = eval_transform(recipe, image_size, config.num_channels, mean, std)
    eval_dataset = data["eval"]
    if eval_crop is not None:
        columns = data["image_column"], data["label_column"]
        eval_dataset = with_pixel_values(data["splits"]["validation"], eval_crop, *columns)
    resolved = apply_recipe(recipe, training_args, given, len(train_dataset))
    training_args.label_names = ["labels"]
    trainer = FinetuneTrainer(
        model=model,
        args=training_args,
        processing_class=data["processor"],
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_pixel_values_and_labels,
        compute_metrics=topk_metrics,
        layer_decay=recipe.layer_decay,
        mixup=mixup_of(recipe, data["num_classes"]),
        label_smoothing=recipe.label_smoothing,
    )
    train_result = trainer.train()
    trainer.save_model()
    epochs = epoch_metrics(trainer.state.log_history)
    last = epochs[-1] if epochs else None
    if last is None or last["epoch"] < training_args.num_train_epochs - 1e-6:
        metrics = trainer.evaluate()
        last = epoch_metrics([metrics | {"epoch": training_args.num_train_epochs}])[0]
        epochs.append(last)
    best = max(epochs, key=lambda entry: entry["top1_accuracy"])
    results = {
        "top1_accuracy": last["top1_accuracy"],
        "top5_accuracy": last["top5_accuracy"],
        "eval_loss": last["eval_loss"],
        "best_top1_accuracy": best["top1_accuracy"],
        "best_top5_accuracy": best["top5_accuracy"],
        "best_epoch": best["epoch"],
        "per_epoch": epochs,
        "train_loss": train_result.training_loss,
        "model_name_or_path": args.model_name_or_path,
        "recipe": {key: getattr(recipe, key) for key in FinetuneRecipe.__dataclass_fields__},
        "model_size": args.model_size,
        "epochs": training_args.num_train_epochs,
        "image_size": image_size,
        "max_grad_norm": training_args.max_grad_norm,
        "warmup_steps": training_args.warmup_steps,
        **resolved,
        "num_train": len(train_dataset),
        "num_eval": len(eval_dataset),
        "num_classes": data["num_classes"],
        "unreadable_images": trainer.total_unreadable_images("train") + trainer.total_unreadable_images("eval"),
    }
    summary = (
        f"fine-tune (recipe {recipe.name}, {training_args.num_train_epochs:g} epochs): "
        f"top-1 {last['top1_accuracy']:.4f} top-5 {last['top5_accuracy']:.4f}, "
        f"best top-1 {best['top1_accuracy']:.4f} (epoch {best['epoch']:g})"
    )
    return report_results(results, training_args.output_dir, summary)


if __name__ == "__main__":
    exit_on_bad_input(main)
