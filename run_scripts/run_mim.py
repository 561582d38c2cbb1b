#!/usr/bin/env python
"""SimMIM pretraining of a ViT or Swin with GPA (or random) masks: Hugging Face's run_mim.py, plus GPA's flags.

    python run_scripts/run_mim.py --model_type swin --dataset_name fashion_mnist --output_dir outputs/simmim \\
        --do_train --image_size 64 --patch_size 4 --mask_patch_size 16 \\
        --config_overrides "embed_dim=48,window_size=2" \\
        --mask_method gpa --gpa_teacher pretrained --gpa_teacher_name_or_path outputs/mae --max_steps 500

Same arguments, with the same meaning, as run_mim.py (--model_type vit|swin, --mask_patch_size, --mask_ratio,
--patch_size = the model's patch size, --config_overrides, every TrainingArguments flag); datasets as in
run_pretrain.py, and the same mask flags (modeling_gpa.training.masking_arguments). --mask_method random is
run_mim.py's mask (ceil(mask_ratio * n) random mask patches per image); --mask_method gpa or cls_attention draws the
same number with Eq. 6's schedule from a teacher's scores pooled to the mask-patch grid (modeling_gpa.simmim.masking);
--mask_method block draws BEiT's rectangles on that grid. Checkpoints load with ViTForImageClassification /
SwinForImageClassification.from_pretrained. Run with `accelerate launch --config_file ...` for several processes.
"""

from __future__ import annotations

import logging
import pickle
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import transformers
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForMaskedImageModeling,
    set_seed,
)

from modeling_gpa.command_line import pickle_refusal
from modeling_gpa.configuration_gpa import ATTENTION_SCORED, GPAConfig
from modeling_gpa.data import (
    collate_pixel_values,
)
from modeling_gpa.data.ground_truth import annotated_model_inputs
from modeling_gpa.data.image_inputs import ImageSettings
from modeling_gpa.data.splits import image_geometry, load_splits, with_crops
from modeling_gpa.head_selection import format_selection, select_attention_head
from modeling_gpa.masking import MaskSchedule
from modeling_gpa.simmim.trainer import SIMMIM_FIELDS, SimMIMMasker, SimMIMMaskSettings, SimMIMTrainer
from modeling_gpa.training.arguments import (
    HubArguments,
    ImageDataArguments,
    hub_kwargs,
    parse_script_arguments,
)
from modeling_gpa.training.masking_arguments import MASKING_FLAGS, MaskingArguments
from modeling_gpa.training.script import (
    build_image_processor_for,
    check_checkpoint_flags,
    check_output_dir_writable,
    checkpoint_to_resume,
    one_line,
    start,
    train_or_exit,
)
from modeling_gpa.training.trainer import GPATrainingArguments

logger = logging.getLogger(__name__)

MODEL_TYPES = ("vit", "swin")


@dataclass
class ModelArguments(MaskingArguments, HubArguments):
    """Which model to pretrain (run_mim.py's arguments); the mask strategy's flags are [`MaskingArguments`]."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A ViT or Swin checkpoint for weights initialization. Don't set to train from scratch."},
    )
    model_type: str | None = field(
        default=None,
        metadata={"help": "If training from scratch, the model type.", "choices": list(MODEL_TYPES)},
    )
    config_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained config name or path if not the same as model_name_or_path."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": (
                "Override some existing default config settings when a model is trained from scratch. Example: "
                "embed_dim=48,window_size=2 (no lists: the string is split at commas; use --config_name_or_path)"
            )
        },
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Image size (resolution). Unset: the configuration's image_size."}
    )
    patch_size: int | None = field(
        default=None,
        metadata={"help": "The model's patch size (run_mim.py's model_patch_size). Unset: the configuration's."},
    )
    encoder_stride: int | None = field(
        default=None,
        metadata={
            "help": (
                "Stride of the SimMIM decoder. Unset: the configuration's; from scratch, patch_size for a ViT and "
                "patch_size * 2**(stages - 1) for a Swin."
            )
        },
    )


@dataclass
class DataTrainingArguments(ImageDataArguments):
    """Which images to pretrain and evaluate on, and the mask geometry (run_mim.py's)."""

    mask_patch_size: int = field(default=32, metadata={"help": "The size of the square patches to use for masking."})
    mask_ratio: float = field(default=0.6, metadata={"help": "Percentage of patches to mask."})
    gpa_selection_images: int | None = field(
        default=None,
        metadata={
            "help": (
                "With --mask_method gpa: before training, choose the teacher's --gpa_layer/--gpa_head by few-shot "
                "selection (paper section 3.4) on this many training images, their object_mask column "
                "(cluttered_fashion_mnist) or non-zero pixels as ground truth; the teacher must take the student's "
                "image size."
            )
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.streaming and self.gpa_selection_images:
            raise ValueError(
                "--gpa_selection_images reads the first training images, which differ between processes when they "
                "stream their own shards: with --streaming pass --gpa_layer/--gpa_head instead."
            )


def parse_arguments(argv: list[str] | None = None):
    return parse_script_arguments((ModelArguments, DataTrainingArguments, GPATrainingArguments), __doc__, argv)


def build_config(model_args: ModelArguments, num_channels: int) -> transformers.PretrainedConfig:
    """run_mim.py's config: --config_name_or_path / --model_name_or_path / --model_type (+ --config_overrides)."""
    source = model_args.config_name_or_path or model_args.model_name_or_path
    if source:
        config = AutoConfig.from_pretrained(source, **hub_kwargs(model_args))
    elif model_args.model_type is None:
        raise ValueError("no model given: pass --model_type vit|swin (from scratch) or --model_name_or_path.")
    else:
        config = CONFIG_MAPPING[model_args.model_type]()
        if "num_channels" not in (model_args.config_overrides or ""):
            config.num_channels = num_channels
        if model_args.config_overrides:
            config.update_from_string(model_args.config_overrides)
    if config.model_type not in MODEL_TYPES:
        raise ValueError(f"config of type {config.model_type!r} is invalid; allowed values: {', '.join(MODEL_TYPES)}.")
    config.image_size = model_args.image_size or config.image_size
    config.patch_size = model_args.patch_size or config.patch_size
    if model_args.encoder_stride:
        config.encoder_stride = model_args.encoder_stride
    elif not source:
        # The SimMIM decoder upsamples the last feature map back to the image: by the patch size for a ViT, by the
        # patch size times each patch merging's factor 2 for a Swin.
        stages = len(config.depths) if config.model_type == "swin" else 1
        config.encoder_stride = config.patch_size * 2 ** (stages - 1)
    return config


def mask_settings(model_args: ModelArguments, data_args: DataTrainingArguments, config) -> SimMIMMaskSettings:
    """The SimMIM mask of the flags given; unset ones take ``GPAConfig``'s defaults, as in run_pretrain.py."""
    fields = {name: getattr(GPAConfig, name) for name, _, _ in MASKING_FLAGS} | model_args.masking_overrides()
    unsupported = sorted(name for name in model_args.masking_overrides() if name not in SIMMIM_FIELDS)
    if unsupported:
        raise ValueError(f"--{unsupported[0]} has no effect on a SimMIM student; drop it.")
    return SimMIMMaskSettings(
        image_size=config.image_size,
        mask_patch_size=data_args.mask_patch_size,
        model_patch_size=config.patch_size,
        mask_ratio=data_args.mask_ratio,
        method=fields["mask_method"],
        teacher=fields["gpa_teacher"],
        teacher_name_or_path=fields["gpa_teacher_name_or_path"],
        layer=fields["gpa_layer"],
        head=fields["gpa_head"],
        score=fields["gpa_score"],
        queries=fields["gpa_queries"],
        schedule=MaskSchedule.from_config(SimpleNamespace(**fields)),
        ema_momentum=fields["gpa_ema_momentum"],
        block_min_patches=fields["block_min_patches"],
        block_min_aspect=fields["block_min_aspect"],
    )


def select_block_and_head(masker: SimMIMMasker, model, processor, data_args, images, image_column: str) -> None:
    """Few-shot attention selection: the teacher's (block, head) whose top-k GPA best covers the objects."""
    encoder = masker.teacher_encoder(model)
    teacher_size = encoder.config.image_size
    if (teacher_size if isinstance(teacher_size, int) else teacher_size[0]) != model.config.image_size:
        raise ValueError(
            f"--gpa_selection_images needs a teacher at the student's image size {model.config.image_size}; the "
            f"teacher takes {teacher_size}: pass --gpa_layer/--gpa_head instead."
        )
    settings = ImageSettings.for_config(model.config, processor.image_mean, processor.image_std)
    pixel_values, objects = annotated_model_inputs(
        data_args.gpa_selection_images, settings, encoder.config.patch_size, dataset=images, image_column=image_column
    )
    scoring = dict(score=masker.settings.score, queries=masker.settings.queries)
    selection = select_attention_head(encoder, pixel_values, objects, mask_ratio=data_args.mask_ratio, **scoring)
    masker.use_block_and_head(selection.best_layer, selection.best_head)
    logger.warning(f"Few-shot attention selection: {format_selection(selection)}")


def build_trainer(model_args, data_args, training_args) -> tuple[SimMIMTrainer, str | None]:
    """Everything before training: checkpoint to resume, data, config, model, masks, image processor, trainer."""
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("nothing to do: pass --do_train and/or --do_eval.")
    check_output_dir_writable(training_args)
    check_checkpoint_flags(model_args)
    checkpoint = checkpoint_to_resume(training_args)
    train, eval_, image_column = load_splits(model_args, data_args, training_args)
    _, num_channels = image_geometry(train if train is not None else eval_, image_column)
    config = build_config(model_args, num_channels)
    settings = mask_settings(model_args, data_args, config)
    set_seed(training_args.seed)
    if model_args.model_name_or_path:
        model = AutoModelForMaskedImageModeling.from_pretrained(
            model_args.model_name_or_path, config=config, **hub_kwargs(model_args)
        )
    else:
        model = AutoModelForMaskedImageModeling.from_config(config, trust_remote_code=model_args.trust_remote_code)
    masker = SimMIMMasker(settings, model, config.num_channels)
    processor = build_image_processor_for(model_args, config)
    if data_args.gpa_selection_images and settings.method in ATTENTION_SCORED:
        select_block_and_head(masker, model, processor, data_args, train if train is not None else eval_, image_column)
    logger.info(
        f"SimMIM {config.model_type}: {config.image_size}x{config.image_size}x{config.num_channels} images, patch "
        f"{config.patch_size}, mask patch {data_args.mask_patch_size}, mask ratio {data_args.mask_ratio}, "
        f"{model.num_parameters() / 1e6:.2f}M parameters; masking: {settings.method}"
        + (f", teacher: {settings.teacher}" if settings.method in ATTENTION_SCORED else "")
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
    trainer = SimMIMTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_,
        processing_class=processor,
        data_collator=collate_pixel_values,
        masker=masker,
    )
    return trainer, checkpoint


def main(argv: list[str] | None = None) -> dict:
    try:
        model_args, data_args, training_args = start(parse_arguments, argv, logger)
        trainer, checkpoint = build_trainer(model_args, data_args, training_args)
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"run_mim.py: error: {one_line(error)}")
    except pickle.UnpicklingError as error:
        sys.exit(f"run_mim.py: error: {pickle_refusal(error)}")
    return train_or_exit("run_mim.py", trainer, training_args, checkpoint)


if __name__ == "__main__":
    main()
