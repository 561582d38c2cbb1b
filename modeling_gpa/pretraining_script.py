"""What run_pretrain.py and run_mim.py share around their models: the image splits, their crops, the start-up line."""

from __future__ import annotations

import datasets
from transformers import TrainingArguments

from .data import load_image_datasets, transforms_from_processor, with_pixel_values


def prepare_split(
    dataset: datasets.Dataset, name: str, limit: int | None, training_args: TrainingArguments
) -> datasets.Dataset:
    """Seeded truncation to ``limit`` images, as run_mae.py does. Images are only decoded when the loader reads them."""
    if limit is not None:
        dataset = dataset.shuffle(seed=training_args.seed).select(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"the {name} split has no images: check --train_dir / --dataset_name.")
    return dataset


def load_splits(
    model_args, data_args, training_args: TrainingArguments
) -> tuple[datasets.Dataset | None, datasets.Dataset | None, str]:
    """The train split (with --do_train) and the validation split (with --do_eval), truncated, and the image column.

    ``model_args`` gives ``cache_dir``; ``data_args`` the dataset flags (``dataset_name``, ``train_dir``, ...,
    ``max_train_samples``, ``max_eval_samples``). A split that is not asked for is ``None``.
    """
    # The main process builds the dataset cache first; the others then read it.
    with training_args.main_process_first(desc="loading the dataset"):
        dataset, image_column = load_image_datasets(
            dataset_name=data_args.dataset_name,
            dataset_config_name=data_args.dataset_config_name,
            train_dir=data_args.train_dir,
            validation_dir=data_args.validation_dir,
            train_val_split=data_args.train_val_split,
            cache_dir=model_args.cache_dir,
            seed=training_args.seed,
            image_column_name=data_args.image_column_name,
        )
    train = eval_ = None
    if training_args.do_train:
        train = prepare_split(dataset["train"], "train", data_args.max_train_samples, training_args)
    if training_args.do_eval:
        eval_ = prepare_split(dataset["validation"], "validation", data_args.max_eval_samples, training_args)
    return train, eval_, image_column


def with_crops(
    train: datasets.Dataset | None,
    eval_: datasets.Dataset | None,
    processor,
    num_channels: int,
    image_column: str,
    strict: bool,
) -> tuple[datasets.Dataset | None, datasets.Dataset | None]:
    """Both splits with uint8 ``pixel_values`` (C, H, W): the processor's random crop for train, its fixed one for eval.

    The trainer normalises each batch on the device with the processor's mean/std.
    """
    if train is not None:
        crop = transforms_from_processor(processor, num_channels, train=True)
        train = with_pixel_values(train, crop, image_column, strict=strict)
    if eval_ is not None:
        crop = transforms_from_processor(processor, num_channels, train=False)
        eval_ = with_pixel_values(eval_, crop, image_column, strict=strict)
    return train, eval_


def process_summary(training_args: TrainingArguments) -> str:
    """One line on this process: rank, device, GPUs, whether training is distributed, mixed precision."""
    return (
        f"Process rank: {training_args.process_index}, device: {training_args.device}, n_gpu: "
        f"{training_args.n_gpu}, distributed training: {training_args.parallel_mode.value == 'distributed'}, "
        f"mixed precision: {training_args.mixed_precision}"
    )
