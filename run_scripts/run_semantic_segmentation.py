#!/usr/bin/env python
"""Semantic segmentation with UperNet over a GPA, ViTMAE or ViT encoder (``GPABackbone``), by MAE's ADE20K recipe.

Arguments are those of Hugging Face's ``examples/pytorch/semantic-segmentation/run_semantic_segmentation.py`` plus
the recipe's. ``--recipe mae`` (the default) is mmsegmentation's ``upernet_mae-base_fp16_8x2_512x512_160k_ade20k``
(see ``modeling_gpa.evaluation.segmentation``); every flag given on the command line wins over it. ADE20K, as MAE
reports it (a GPU machine; batch 16 = 8 GPUs x 2):

    accelerate launch run_scripts/run_semantic_segmentation.py --model_name_or_path outputs/gpa-vit-base \\
        --train_dir ADEChallengeData2016 --num_labels 150 --do_reduce_labels --do_train --do_eval \\
        --output_dir outputs/upernet-gpa-ade20k --bf16

Datasets: ``--dataset_name`` of a Hub or local dataset in ``scene_parse_150``'s layout (``image`` and
``annotation`` columns), ``--train_dir`` of an ``ADEChallengeData2016`` folder, or ``--dataset_name
cluttered_fashion_mnist`` (11 classes: background and the 10 garments).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed

from modeling_gpa import GPAConfig
from modeling_gpa.command_line import check_checkpoint
from modeling_gpa.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from modeling_gpa.data.segmentation import (
    CLUTTERED_SEGMENTATION_CLASSES,
    SegmentationTransform,
    collate_segmentation,
    load_ade_folder,
    load_cluttered_segmentation,
    segmentation_batch_transform,
)
from modeling_gpa.evaluation.segmentation import (
    SEGMENTATION_RECIPES,
    segmentation_trainer_class,
    upernet_for_segmentation,
)
from modeling_gpa.training.flag_ranges import TRAINING_FLAG_RANGES, check_flag_ranges

logger = logging.getLogger(__name__)
CLUTTERED = "cluttered_fashion_mnist"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "GPA, ViTMAE or ViT checkpoint (or MAE's weights after modeling_gpa.convert)."}
    )
    config_name: str | None = field(default=None, metadata={"help": "Config of a random encoder (no checkpoint)."})
    cache_dir: str | None = None
    model_revision: str = "main"
    image_processor_name: str | None = field(default=None, metadata={"help": "Where to read image_mean / std."})
    token: str | None = None
    trust_remote_code: bool = False
    recipe: str = field(default="mae", metadata={"help": f"One of {', '.join(SEGMENTATION_RECIPES)}."})
    out_indices: str | None = field(default=None, metadata={"help": "Four blocks for the neck, e.g. 4,6,8,12."})
    layer_decay: float | None = None
    drop_path: float | None = None
    crop_size: int | None = None
    stride: int | None = field(default=None, metadata={"help": "Slide inference stride (MAE: 341)."})
    image_scale: str | None = field(default=None, metadata={"help": "Rescale bound 'long,short' (ADE20K: 2048,512)."})
    auxiliary_loss_weight: float | None = None
    decode_channels: int | None = field(default=None, metadata={"help": "UperNet head width (MAE: 768)."})
    auxiliary_channels: int | None = field(default=None, metadata={"help": "FCN auxiliary head width (MAE: 256)."})


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": f"scene_parse_150-like dataset or {CLUTTERED}."})
    dataset_config_name: str | None = None
    train_dir: str | None = field(default=None, metadata={"help": "An ADEChallengeData2016 folder."})
    train_val_split: float | None = 0.15
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    do_reduce_labels: bool = field(default=False, metadata={"help": "Annotation 0 -> 255 (ignored), others - 1."})
    num_labels: int | None = field(default=None, metadata={"help": "Classes (after --do_reduce_labels)."})


@dataclass
class SegmentationTrainingArguments(TrainingArguments):
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep `image` and `annotation`."})
    # The heads' BatchNorm (pooled to 1x1 in the pyramid pooling) cannot train on a batch of one image.
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Drop the last incomplete training batch."})

    def __post_init__(self):
        # Before anything loads: Transformers and torch would find a bad number only once training starts.
        check_flag_ranges(self, TRAINING_FLAG_RANGES)
        super().__post_init__()


def explicit_flags(argv: list[str]) -> set[str]:
    """The ``--flag`` names given in ``argv`` (``--flag value`` or ``--flag=value``), without the dashes."""
    return {token[2:].split("=", 1)[0] for token in argv if token.startswith("--")}


def resolve_recipe(model_args: ModelArguments, training_args: TrainingArguments, given: set[str]):
    """The recipe with every flag given applied, and Trainer's settings that no flag gave set from it."""
    if model_args.recipe not in SEGMENTATION_RECIPES:
        raise ValueError(
            f"--recipe {model_args.recipe!r} is invalid; allowed values: {', '.join(SEGMENTATION_RECIPES)}."
        )
    overrides = {
        name: getattr(model_args, name)
        for name in (
            "layer_decay",
            "drop_path",
            "crop_size",
            "stride",
            "auxiliary_loss_weight",
            "decode_channels",
            "auxiliary_channels",
        )
        if getattr(model_args, name) is not None
    }
    if model_args.image_scale:
        overrides["image_scale"] = tuple(int(side) for side in model_args.image_scale.split(","))
    for name in ("learning_rate", "weight_decay", "max_steps", "warmup_steps", "per_device_train_batch_size"):
        if name in given:
            overrides[name] = getattr(training_args, name)
    recipe = dataclasses.replace(SEGMENTATION_RECIPES[model_args.recipe], **overrides)
    training_args.learning_rate, training_args.weight_decay = recipe.learning_rate, recipe.weight_decay
    training_args.max_steps, training_args.warmup_steps = recipe.max_steps, recipe.warmup_steps
    training_args.per_device_train_batch_size = recipe.per_device_train_batch_size
    if "gradient_accumulation_steps" not in given:
        per_step = recipe.per_device_train_batch_size * training_args.world_size
        training_args.gradient_accumulation_steps = max(recipe.total_batch_size // per_step, 1)
    return recipe


def load_splits(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int):
    """ "train" and "validation" splits with ``image`` and ``annotation``, and the class names."""
    from datasets import load_dataset

    if data_args.dataset_name == CLUTTERED:
        dataset = load_cluttered_segmentation(
            cache_dir=model_args.cache_dir,
            max_train_samples=data_args.max_train_samples,
            max_test_samples=data_args.max_eval_samples,
        )
        return dataset, list(CLUTTERED_SEGMENTATION_CLASSES)
    if data_args.train_dir is not None:
        dataset = load_ade_folder(data_args.train_dir)
    elif data_args.dataset_name is not None:
        dataset = load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir)
        if "label" in dataset["train"].column_names and "annotation" not in dataset["train"].column_names:
            dataset = dataset.rename_column("label", "annotation")
    else:
        raise ValueError(f"Pass --dataset_name (a scene_parse_150-like dataset or {CLUTTERED}) or --train_dir.")
    if "validation" not in dataset:
        split = dataset["train"].train_test_split(data_args.train_val_split, seed=seed)
        dataset["train"], dataset["validation"] = split["train"], split["test"]
    if data_args.num_labels is None:
        raise ValueError("--num_labels is required for this dataset (ADE20K: 150 with --do_reduce_labels).")
    return dataset, [f"class_{index}" for index in range(data_args.num_labels)]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, SegmentationTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    recipe = resolve_recipe(model_args, training_args, explicit_flags(argv))
    set_seed(training_args.seed)

    # GPABackbone and GPAConfig never run a checkpoint's own code: one that needs it is refused before loading.
    check_checkpoint(model_args.model_name_or_path)
    check_checkpoint(model_args.config_name, flag="--config_name")
    dataset, names = load_splits(data_args, model_args, training_args.seed)
    id2label = dict(enumerate(names))
    out_indices = [int(index) for index in model_args.out_indices.split(",")] if model_args.out_indices else None
    config = None
    if model_args.model_name_or_path is None:
        if model_args.config_name is None:
            raise ValueError("Pass --model_name_or_path (a checkpoint) or --config_name (a random encoder's config).")
        config = GPAConfig.from_pretrained(model_args.config_name)
    model = upernet_for_segmentation(model_args.model_name_or_path, id2label, recipe, out_indices, config)
    backbone_config = model.config.backbone_config
    if data_args.dataset_name == CLUTTERED:
        mean, std = FASHION_MNIST_MEAN * backbone_config.num_channels, FASHION_MNIST_STD * backbone_config.num_channels
    else:
        mean, std = image_statistics(model_args.image_processor_name or model_args.model_name_or_path)

    def transform(train: bool):
        steps = SegmentationTransform(recipe.crop_size, recipe.image_scale, mean, std, recipe.ratio_range, train)
        return segmentation_batch_transform(steps, len(names), data_args.do_reduce_labels, backbone_config.num_channels)

    train_dataset = eval_dataset = None
    if training_args.do_train:
        train_dataset = dataset["train"]
        if data_args.max_train_samples is not None:
            train_dataset = train_dataset.select(range(min(data_args.max_train_samples, len(train_dataset))))
        train_dataset = train_dataset.with_transform(transform(train=True))
    if training_args.do_eval:
        eval_dataset = dataset["validation"]
        if data_args.max_eval_samples is not None:
            eval_dataset = eval_dataset.select(range(min(data_args.max_eval_samples, len(eval_dataset))))
        eval_dataset = eval_dataset.with_transform(transform(train=False))

    trainer = segmentation_trainer_class()(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_segmentation,
        recipe=recipe,
    )
    results = {"recipe": recipe.to_dict()}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        results["train_loss"] = train_result.training_loss
    if training_args.do_eval:
        results.update(trainer.evaluate())
    if trainer.is_world_process_zero():
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        Path(training_args.output_dir, "segmentation_results.json").write_text(json.dumps(results, indent=2))
    logger.info(f"Results: {json.dumps({k: v for k, v in results.items() if not k.startswith('eval_iou_')})}")
    return results


def image_statistics(name_or_path: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The checkpoint's image processor mean and std, ImageNet's when it has none."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError, TypeError):
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(processor.image_mean), tuple(processor.image_std)


if __name__ == "__main__":
    from modeling_gpa.command_line import exit_on_bad_input

    exit_on_bad_input(main)
