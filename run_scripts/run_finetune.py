#!/usr/bin/env python
"""End-to-end fine-tuning of any GPA, ViTMAE, ViT or Swin checkpoint for image classification (MAE's recipe).

    python run_scripts/run_finetune.py --model_name_or_path outputs/gpa --dataset_name fashion_mnist \\
        --output_dir outputs/finetune --num_train_epochs 10 --layer_decay 0.75 --mixup 0.8 --cutmix 1.0 \\
        --label_smoothing 0.1

``ViTForImageClassification.from_pretrained(<checkpoint>)`` (``SwinForImageClassification`` for a Swin checkpoint, such
as run_mim.py's) trained with HF Trainer: AdamW with layer-wise lr decay (``lr * layer_decay ** (num_layers + 1 -
layer_id)``, as MAE/BEiT; for a Swin, SimMIM's layer ids over all blocks), weight decay 0.05, cosine schedule after a 5%
warm-up (MAE's defaults; Trainer flags override them), optional mixup / CutMix with label smoothing, accuracy on the
eval split. Every Trainer flag works (``--per_device_train_batch_size``, ``--learning_rate`` or
``--base_learning_rate``, ``--warmup_steps``...). Writes ``<output_dir>/results.json`` and prints a one-line summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import (
    AutoConfig,
    HfArgumentParser,
    PretrainedConfig,
    SwinForImageClassification,
    Trainer,
    TrainingArguments,
    ViTForImageClassification,
)

from modeling_gpa.command_line import exit_on_bad_input
from modeling_gpa.data import collate_pixel_values_and_labels, transforms_from_processor, with_pixel_values
from modeling_gpa.evaluation import (
    MixupCutmixCollator,
    load_labelled_splits,
    load_metric,
    load_vit,
    param_groups_layer_decay,
    report_results,
    soft_target_cross_entropy,
)
from modeling_gpa.evaluation.features import is_swin
from modeling_gpa.trainer import DeviceInputsMixin


@dataclass
class FinetuneArguments:
    """Checkpoint, dataset (as run_pretrain.py) and the fine-tuning recipe."""

    model_name_or_path: str = field(metadata={"help": "GPA, ViTMAE or ViT checkpoint directory."})
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
    base_learning_rate: float | None = field(
        default=None, metadata={"help": "If set, lr = base_learning_rate * total batch size / 256 (MAE's --blr)."}
    )
    layer_decay: float = field(default=0.75, metadata={"help": "Layer-wise lr decay; 1.0 disables it."})
    mixup: float = field(default=0.0, metadata={"help": "Mixup alpha (MAE fine-tuning: 0.8); 0 disables."})
    cutmix: float = field(default=0.0, metadata={"help": "CutMix alpha (MAE fine-tuning: 1.0); 0 disables."})
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """[`TrainingArguments`] with MAE fine-tuning's defaults: cosine schedule, 5% warm-up, weight decay 0.05."""

    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule after warm-up."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps, or a fraction (< 1) of all steps."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (none on biases and norms)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep `pixel_values` and `labels`."})


class FinetuneTrainer(DeviceInputsMixin, Trainer):
    """Trainer with layer-wise lr decay, soft-target loss (mixup / CutMix) and a plain collator for evaluation; uint8
    batches are normalised on the device with the image processor's mean/std (``processing_class``)."""

    def __init__(self, *args, layer_decay: float, label_smoothing: float, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_decay = layer_decay
        self.label_smoothing = label_smoothing
        self.eval_data_collator = eval_data_collator or self.data_collator

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            groups = param_groups_layer_decay(
                self.model if model is None else model,
                lr=self.args.learning_rate,
                weight_decay=self.args.weight_decay,
                layer_decay=self.layer_decay,
            )
            self.optimizer = torch.optim.AdamW(
                groups,
                lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
        return self.optimizer

    def get_eval_dataloader(self, eval_dataset=None):
        # Trainer has one collator; evaluation must see the real images and integer labels, not mixed ones.
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(pixel_values=inputs["pixel_values"])
        loss = soft_target_cross_entropy(outputs.logits, inputs["labels"], self.label_smoothing)
        return (loss, outputs) if return_outputs else loss


def load_classifier(
    name_or_path: str, config: PretrainedConfig, id2label: dict[int, str]
) -> ViTForImageClassification | SwinForImageClassification:
    """``ViTForImageClassification`` (``SwinForImageClassification`` for a Swin ``config``, such as run_mim.py's) with
    a fresh head; a one-line error when the checkpoint has no encoder weights."""
    swin = is_swin(config)
    return load_vit(
        SwinForImageClassification if swin else ViTForImageClassification,
        name_or_path,
        encoder_prefix="swin." if swin else "vit.",
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        ignore_mismatched_sizes=True,
    )


def accuracy_metric(eval_prediction) -> dict[str, float]:
    """``compute_metrics`` for Trainer: top-1 accuracy of the logits through the offline accuracy metric."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return load_metric("accuracy").compute(predictions=np.argmax(logits, axis=-1), references=labels)


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((FinetuneArguments, FinetuneTrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if not 0.0 < args.layer_decay <= 1.0:
        raise ValueError(f"--layer_decay={args.layer_decay} is invalid; allowed values: a number in (0, 1].")
    args.seed = training_args.seed
    try:
        config = AutoConfig.from_pretrained(args.model_name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"No checkpoint config at {args.model_name_or_path!r}: pass --model_name_or_path a directory saved by "
            "run_pretrain.py, run_mim.py, ViTMAEForPreTraining or ViTModel."
        ) from error
    data = load_labelled_splits(args, config.image_size, config.num_channels, args.model_name_or_path)
    model = load_classifier(args.model_name_or_path, config, data["id2label"])
    train_crop = transforms_from_processor(data["processor"], config.num_channels, train=True)
    train_dataset = with_pixel_values(data["splits"]["train"], train_crop, data["image_column"], data["label_column"])
    if args.base_learning_rate is not None:
        total_batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
        training_args.learning_rate = args.base_learning_rate * total_batch * training_args.world_size / 256
    training_args.label_names = ["labels"]
    train_collator = collate_pixel_values_and_labels
    if args.mixup > 0 or args.cutmix > 0:
        train_collator = MixupCutmixCollator(
            collate_pixel_values_and_labels,
            num_classes=data["num_classes"],
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
            label_smoothing=args.label_smoothing,
            prob=args.mixup_prob,
            switch_prob=args.mixup_switch_prob,
            seed=training_args.seed,
        )
    trainer = FinetuneTrainer(
        model=model,
        args=training_args,
        processing_class=data["processor"],
        train_dataset=train_dataset,
        eval_dataset=data["eval"],
        data_collator=train_collator,
        eval_data_collator=collate_pixel_values_and_labels,
        compute_metrics=accuracy_metric,
        layer_decay=args.layer_decay,
        # With mixup the smoothing is already in the soft targets.
        label_smoothing=0.0 if train_collator is not collate_pixel_values_and_labels else args.label_smoothing,
    )
    train_result = trainer.train()
    trainer.save_model()
    metrics = trainer.evaluate()
    results = {
        "accuracy": metrics["eval_accuracy"],
        "eval_loss": metrics["eval_loss"],
        "train_loss": train_result.training_loss,
        "model_name_or_path": args.model_name_or_path,
        "epochs": training_args.num_train_epochs,
        "learning_rate": training_args.learning_rate,
        "layer_decay": args.layer_decay,
        "mixup": args.mixup,
        "cutmix": args.cutmix,
        "label_smoothing": args.label_smoothing,
        "num_train": len(train_dataset),
        "num_eval": len(data["eval"]),
        "num_classes": data["num_classes"],
        "unreadable_images": trainer.total_unreadable_images("train") + trainer.total_unreadable_images("eval"),
    }
    summary = f"fine-tune ({training_args.num_train_epochs:g} epochs, layer decay {args.layer_decay}): accuracy "
    return report_results(results, training_args.output_dir, summary + f"{results['accuracy']:.4f}")


if __name__ == "__main__":
    exit_on_bad_input(main)
