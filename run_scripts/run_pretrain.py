#!/usr/bin/env python
"""Pretrain a ViT with GPA (or plain MAE) masking: Hugging Face's run_mae.py, plus the GPA method's flags.

    python run_scripts/run_pretrain.py --dataset_name fashion_mnist --output_dir outputs/gpa --do_train --do_eval \\
        --image_size 28 --config_overrides "patch_size=4,hidden_size=64,num_hidden_layers=4,..." \\
        --base_learning_rate 1.5e-4 --max_steps 500

Trains from scratch (--config_name or --config_overrides), or from a ViTMAE or GPA checkpoint (--model_name_or_path).
Resumes from the last complete checkpoint in --output_dir unless --overwrite_output_dir; --mask_method
random|block|cls_attention|hpm|gpa picks the mask strategy (random: the MAE baseline through the same model).
Run with `accelerate launch --config_file ...` for several processes.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass, field

import datasets
import transformers
from transformers import AutoConfig, ViTMAEConfig, set_seed

import modeling_gpa
from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.command_line import pickle_refusal
from modeling_gpa.data import (
    collate_pixel_values,
)
from modeling_gpa.data.ground_truth import annotated_model_inputs
from modeling_gpa.data.image_inputs import ImageSettings
from modeling_gpa.data.splits import image_geometry, load_splits, with_crops
from modeling_gpa.head_selection import format_selection, select_head_for_pretraining, teacher_encoder_of
from modeling_gpa.presets import preset_fields
from modeling_gpa.training.arguments import (
    HubArguments,
    ImageDataArguments,
    hub_kwargs,
    parse_script_arguments,
)
from modeling_gpa.training.head_reselection import HeadReselectionCallback
from modeling_gpa.training.hub import push_checkpoint_to_hub, write_model_card
from modeling_gpa.training.masking_arguments import MaskingArguments
from modeling_gpa.training.script import (
    build_image_processor_for,
    check_checkpoint_flags,
    check_output_dir_writable,
    checkpoint_to_resume,
    start,
    train_or_exit,
)
from modeling_gpa.training.trainer import GPATrainer, GPATrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments(MaskingArguments, HubArguments):
    """Which model, config and image processor to pretrain; the mask strategy's flags come from [`MaskingArguments`]."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": (
                "ViTMAE or GPA checkpoint (directory or Hub id) to initialise from; GPA weights it lacks (MAM head, "
                "EMA teacher) are initialised and listed in the log. Leave unset to train from scratch."
            )
        },
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Pretrained config name or path (GPA or ViTMAE) if not the same as the model."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": (
                "Override config fields when training from scratch or from --config_name, e.g. "
                "'hidden_size=64,num_hidden_layers=4,num_attention_heads=4,intermediate_size=256,patch_size=4'."
            )
        },
    )
    mask_ratio: float = field(
        default=0.75, metadata={"help": "The ratio of the number of masked tokens in the input sequence."}
    )
    norm_pix_loss: bool = field(
        default=True, metadata={"help": "Whether or not to train with normalized pixel values as target."}
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": (
                "Input resolution. Default: the config's; from scratch without --config_name, the size of the "
                "dataset's images when they are square, equal and a multiple of patch_size."
            )
        },
    )
    num_channels: int | None = field(
        default=None,
        metadata={
            "help": (
                "Image channels (1 or 3); images are converted to it. Default: the config's; from scratch without "
                "--config_name, 1 for a grayscale dataset, else 3."
            )
        },
    )

    def __post_init__(self):
        if self.num_channels is not None and self.num_channels not in (1, 3):
            raise ValueError(f"--num_channels {self.num_channels} is invalid; allowed values: 1, 3.")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"--image_size {self.image_size} is invalid; pass a positive number of pixels.")
        if self.model_name_or_path and self.config_overrides:
            raise ValueError(
                "--config_overrides only applies to a model trained from scratch; with --model_name_or_path set the "
                "GPA flags (--gpa_*, --mask_ratio) instead."
            )


@dataclass
class DataTrainingArguments(ImageDataArguments):
    """Which images to pretrain and evaluate on."""

    gpa_selection_images: int | None = field(
        default=None,
        metadata={
            "help": (
                "Before training, choose the teacher's gpa_layer/gpa_head by few-shot selection on this many annotated "
                "images (paper section 3.4) and record the recall table in OUTPUT_DIR/head_selection.json. Ground "
                "truth: --gpa_selection_masks_dir or --gpa_selection_boxes_json with --gpa_selection_image_dir, else "
                "the training set's object_mask column (cluttered_fashion_mnist) or its non-zero pixels "
                "(fashion_mnist)."
            )
        },
    )
    gpa_selection_heldout: int = field(
        default=0, metadata={"help": "Also report the chosen pair's recall on this many held-out annotated images."}
    )
    gpa_selection_steps: int | None = field(
        default=None,
        metadata={
            "help": (
                "With --gpa_selection_images: repeat the selection on the same images every this many optimizer "
                "steps (and when training resumes), so a 'self' or 'ema' teacher, which changes as the student "
                "learns, keeps masking with the head that currently finds the objects; every choice is written to "
                "OUTPUT_DIR/head_reselection.json. Unset: select once, before training."
            )
        },
    )
    gpa_selection_image_dir: str | None = field(
        default=None, metadata={"help": "Folder of annotated images for --gpa_selection_images."}
    )
    gpa_selection_masks_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of binary object masks named like the images (default: --gpa_selection_image_dir/masks)."
        },
    )
    gpa_selection_boxes_json: str | None = field(
        default=None,
        metadata={
            "help": 'JSON of object boxes, {"file.jpg": [[x0, y0, x1, y1], ...]}, for --gpa_selection_image_dir.'
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.gpa_selection_images is not None and self.gpa_selection_images < 1:
            raise ValueError(f"--gpa_selection_images {self.gpa_selection_images} is invalid; pass an integer >= 1.")
        if self.gpa_selection_heldout < 0:
            raise ValueError(f"--gpa_selection_heldout {self.gpa_selection_heldout} is invalid; pass 0 or more images.")
        if self.streaming and self.gpa_selection_images and not self.gpa_selection_image_dir:
            raise ValueError(
                "--gpa_selection_images reads the first training images, which differ between processes when they "
                "stream their own shards: with --streaming pass --gpa_selection_image_dir with annotated images."
            )
        if self.gpa_selection_steps is not None and (self.gpa_selection_steps < 1 or not self.gpa_selection_images):
            raise ValueError(
                f"--gpa_selection_steps {self.gpa_selection_steps} is invalid; pass a positive number of steps, "
                "together with --gpa_selection_images."
            )


def as_gpa_config(config: transformers.PretrainedConfig) -> GPAConfig:
    """A GPAConfig from a GPA config (unchanged) or a ViTMAE config (its fields, GPA's defaults)."""
    if isinstance(config, GPAConfig):
        return config
    if not isinstance(config, ViTMAEConfig):
        raise ValueError(
            f"config of type {config.model_type!r} cannot be pretrained with GPA; allowed values: a 'vit_mae' or "
            "'gpa' config or checkpoint."
        )
    values = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")}
    return GPAConfig(**values)


def build_config(model_args: ModelArguments, train_images: datasets.Dataset | None, image_column: str) -> GPAConfig:
    """From --config_name / --model_name_or_path / scratch (+ --config_overrides), then the command-line fields."""
    source = model_args.config_name or model_args.model_name_or_path
    if source:
        config = as_gpa_config(AutoConfig.from_pretrained(source, **hub_kwargs(model_args)))
    else:
        config = GPAConfig()
        logger.warning("You are instantiating a new config instance from scratch.")
    overridden = set()
    if model_args.config_overrides:
        logger.info(f"Overriding config: {model_args.config_overrides}")
        overridden = {item.split("=")[0].strip() for item in model_args.config_overrides.split(",")}
        config.update_from_string(model_args.config_overrides)

    from_data = source is None and train_images is not None
    side, channels = image_geometry(train_images, image_column) if from_data else (None, None)
    if model_args.num_channels is not None:
        config.num_channels = model_args.num_channels
    elif from_data and "num_channels" not in overridden:
        config.num_channels = channels
    if model_args.image_size is not None:
        config.image_size = model_args.image_size
    elif from_data and "image_size" not in overridden and side is not None and side % config.patch_size == 0:
        config.image_size = side
    if from_data and side is not None and side != config.image_size:
        logger.info(
            f"The images are {side}x{side}; they are resized to the model's {config.image_size}x{config.image_size}."
        )
    if model_args.model_name_or_path and (model_args.image_size or model_args.num_channels):
        reference = as_gpa_config(AutoConfig.from_pretrained(model_args.model_name_or_path, **hub_kwargs(model_args)))
        if (reference.image_size, reference.num_channels) != (config.image_size, config.num_channels):
            raise ValueError(
                f"--image_size/--num_channels ({config.image_size}, {config.num_channels}) differ from the "
                f"checkpoint's ({reference.image_size}, {reference.num_channels}); drop them to use the checkpoint's."
            )
    if config.image_size % config.patch_size:
        raise ValueError(
            f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}: pass --image_size "
            "or --config_overrides patch_size=... so that it is."
        )

    config.mask_ratio = model_args.mask_ratio
    config.norm_pix_loss = model_args.norm_pix_loss
    explicit = model_args.masking_overrides()
    config.update(explicit)
    config.update(
        {name: value for name, value in strategy_defaults(config.mask_method).items() if name not in explicit}
    )
    if model_args.gpa_preset is not None:
        config.validate_gpa()
        depth = teacher_depth(config, model_args)
        fields = preset_fields(model_args.gpa_preset, *depth, decoder_layers=config.decoder_num_hidden_layers)
        config.update({name: value for name, value in fields.items() if name not in explicit})
    config.validate_gpa()
    return config


def strategy_defaults(mask_method: str) -> dict:
    """Config fields a strategy changes unless flags set them: no MAM without an attention score; HPM's EMA copy
    and hard share 0 -> 0.5 with no soft share; the CLS row for ``cls_attention``."""
    if mask_method in ("random", "block"):
        return {"gpa_prediction": False}
    if mask_method == "hpm":
        return {"gpa_prediction": False, "gpa_teacher": "ema", "soft_ratio_start": 0.0, "soft_ratio_end": 0.0}
    if mask_method == "cls_attention":
        return {"gpa_queries": "cls"}
    return {}


def teacher_depth(config: GPAConfig, model_args: ModelArguments) -> tuple[int, int]:
    """(blocks, heads) of the network that scores the patches: the student, or the pretrained teacher's config."""
    if config.gpa_teacher != "pretrained":
        return config.num_hidden_layers, config.num_attention_heads
    teacher = AutoConfig.from_pretrained(config.gpa_teacher_name_or_path, **hub_kwargs(model_args))
    return teacher.num_hidden_layers, teacher.num_attention_heads


def build_model(model_args: ModelArguments, config: GPAConfig) -> GPAForPreTraining:
    """A new model, or one loaded from --model_name_or_path with its missing GPA weights listed in the log."""
    if not model_args.model_name_or_path:
        logger.info("Training new model from scratch")
        return GPAForPreTraining(config)
    model, info = GPAForPreTraining.from_pretrained(
        model_args.model_name_or_path, config=config, output_loading_info=True, **hub_kwargs(model_args)
    )
    if info["missing_keys"]:
        modules = sorted({key.rsplit(".", 1)[0] for key in info["missing_keys"]})
        logger.warning(
            f"Initialised {len(info['missing_keys'])} weights absent from {model_args.model_name_or_path} "
            f"(in {', '.join(modules)}); an 'ema' teacher starts as a copy of the encoder."
        )
    if info["unexpected_keys"]:
        logger.warning(f"Ignored {len(info['unexpected_keys'])} checkpoint weights: {info['unexpected_keys']}")
    return model


def parse_arguments(argv: list[str] | None = None):
    return parse_script_arguments((ModelArguments, DataTrainingArguments, GPATrainingArguments), __doc__, argv)


def build_trainer(model_args, data_args, training_args) -> tuple[GPATrainer, str | None]:
    """Everything before training: checkpoint to resume, data, config, model, image processor, trainer."""
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("nothing to do: pass --do_train and/or --do_eval.")
    check_output_dir_writable(training_args)
    check_checkpoint_flags(model_args)
    checkpoint = checkpoint_to_resume(training_args)

    train, eval_, image_column = load_splits(model_args, data_args, training_args)

    config = build_config(model_args, train if train is not None else eval_, image_column)
    # Seeded before the weights are drawn, so a run's initialisation depends on --seed alone.
    set_seed(training_args.seed)
    model = build_model(model_args, config)
    processor = build_image_processor_for(model_args, config)
    logger.info(
        f"Model: {config.image_size}x{config.image_size}x{config.num_channels} images, patch {config.patch_size}, "
        f"hidden {config.hidden_size} x {config.num_hidden_layers} layers, {model.num_parameters() / 1e6:.2f}M "
        f"parameters; masking: {config.mask_method}, teacher: {config.gpa_teacher}, MAM: {config.gpa_prediction}"
    )

    reselection = None
    if data_args.gpa_selection_images:
        reselection = select_teacher_head(
            model, processor, data_args, training_args, train if train is not None else eval_, image_column
        )

    train, eval_ = with_crops(
        train,
        eval_,
        processor,
        config.num_channels,
        image_column,
        data_args,
        training_args.device,
        seed=training_args.seed,
        rank=training_args.process_index,
    )
    trainer = GPATrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_,
        processing_class=processor,
        data_collator=collate_pixel_values,
    )
    if reselection is not None:
        trainer.add_callback(reselection)
    return trainer, checkpoint


def select_teacher_head(
    model: GPAForPreTraining,
    processor,
    data_args: DataTrainingArguments,
    training_args: GPATrainingArguments,
    images: datasets.Dataset,
    image_column: str,
) -> HeadReselectionCallback | None:
    """Few-shot attention selection (paper section 3.4): sets the teacher's gpa_layer/gpa_head before training.

    Returns the callback that repeats it during training when ``--gpa_selection_steps`` is set, else ``None``.
    """
    num_images = data_args.gpa_selection_images
    # One draw: the selection images first, the held-out ones after; the same images serve the reselection.
    pixel_values, objects = annotated_model_inputs(
        num_images + data_args.gpa_selection_heldout,
        ImageSettings.for_config(model.config, processor.image_mean, processor.image_std),
        teacher_encoder_of(model).config.patch_size,
        dataset=images,
        image_column=image_column,
        image_dir=data_args.gpa_selection_image_dir,
        masks_dir=data_args.gpa_selection_masks_dir,
        boxes_json=data_args.gpa_selection_boxes_json,
        seed=training_args.seed,
    )
    # Deterministic given the seed, so every process picks the same pair; only the main one writes the table.
    output_dir = training_args.output_dir if training_args.should_save else tempfile.mkdtemp()
    selection = select_head_for_pretraining(
        model,
        pixel_values[:num_images],
        objects[:num_images],
        output_dir=output_dir,
        heldout_pixel_values=pixel_values[num_images:],
        heldout_object_patches=objects[num_images:],
    )
    logger.warning(f"Few-shot attention selection: {format_selection(selection)}")
    if data_args.gpa_selection_steps is None:
        return None
    return HeadReselectionCallback(
        pixel_values[:num_images],
        objects[:num_images],
        data_args.gpa_selection_steps,
        training_args.output_dir if training_args.should_save else None,
    )


def publish(
    training_args: GPATrainingArguments, push: bool, command: list[str], dataset_name: str | None, metrics: dict
) -> None:
    """Writes the model card beside the checkpoint, then (with --push_to_hub) uploads the directory."""
    output_dir = training_args.output_dir
    config = GPAConfig.from_pretrained(output_dir)
    write_model_card(
        output_dir,
        training_command=command,
        config=config,
        dataset_name=dataset_name or "custom images",
        eval_results={k: v for k, v in metrics.items() if k.startswith("eval_")} or None,
        model_id=training_args.hub_model_id,
    )
    if push:
        hub_model_id = training_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))
        url = push_checkpoint_to_hub(
            output_dir, hub_model_id, token=training_args.hub_token, private=bool(training_args.hub_private_repo)
        )
        print(f"Pushed {output_dir} to {url}")


def print_next_steps(output_dir: str) -> None:
    print(
        f"\nGPA checkpoint: {os.path.abspath(output_dir)}\n"
        "Next:\n"
        f"  fine-tune:  ViTForImageClassification.from_pretrained({output_dir!r}, num_labels=...) loads the encoder\n"
        f"  k-NN probe: python run_scripts/run_knn.py --model_name_or_path {output_dir} --dataset_name ... "
        f"--output_dir {output_dir}/knn\n"
        f"  visualise:  python run_scripts/visualize_gpa.py --model_name_or_path {output_dir} "
        f"--output_dir {output_dir}/figures"
    )


def main(argv: list[str] | None = None) -> dict:
    try:
        model_args, data_args, training_args = start(parse_arguments, argv, logger)
        logger.info(f"modeling_gpa {modeling_gpa.__version__}; training/evaluation parameters {training_args}")
        # The upload happens once, at the end, with our model card: Trainer would reach for the Hub at start-up.
        push, training_args.push_to_hub = training_args.push_to_hub, False
        trainer, checkpoint = build_trainer(model_args, data_args, training_args)
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"run_pretrain.py: error: {error}")
    except pickle.UnpicklingError as error:
        sys.exit(f"run_pretrain.py: error: {pickle_refusal(error)}")

    metrics = train_or_exit("run_pretrain.py", trainer, training_args, checkpoint)
    if training_args.do_train and trainer.is_world_process_zero():
        try:
            command = ["python", "run_scripts/run_pretrain.py", *(sys.argv[1:] if argv is None else argv)]
            publish(training_args, push, command, data_args.dataset_name or data_args.train_dir, metrics)
        except RuntimeError as error:
            sys.exit(f"run_pretrain.py: error: {error}")
    if training_args.do_train and trainer.is_world_process_zero():
        print_next_steps(training_args.output_dir)
    return metrics


if __name__ == "__main__":
    main()
