"""Image datasets (Fashion-MNIST, cluttered Fashion-MNIST, image folders, the Hub) and the image processor.

Turning their images into uint8 batches is `modeling_gpa.data.pipeline`'s job; `with_pixel_values` and
`transforms_from_processor` connect the two.

Channels: a model has a fixed `num_channels`. Images of any PIL mode are converted to it by `to_num_channels`
(RGB photos become luminance for a 1-channel model, grayscale images are replicated to RGB for a 3-channel one), so a
channel mismatch between a dataset and a model is never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Sequence

import datasets
from PIL import Image
from transformers import ViTImageProcessorPil

from .arrays import arrays_to_dataset, encode_gray_images
from .columns import named_column
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    fashion_mnist_arrays,
    fashion_mnist_paths,
)
from .pipeline import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalCrop,
    ImageDataset,
    TrainCrop,
    collate_pixel_values,
    collate_pixel_values_and_labels,
    random_resized_crop_box,
    to_num_channels,
)

logger = logging.getLogger(__name__)

FASHION_MNIST_NAMES = ("fashion_mnist", "zalando-datasets/fashion_mnist", "fashion-mnist")
CLUTTERED_FASHION_MNIST_NAME = "cluttered_fashion_mnist"


# ----------------------------------------------------------------------------------------------------------------------
# Fashion-MNIST from the Debian package
# ----------------------------------------------------------------------------------------------------------------------


def load_fashion_mnist(data_dir: str | None = None) -> datasets.DatasetDict:
    """Fashion-MNIST as a DatasetDict: "train" (60k) and "test" (10k); columns `image` (PIL "L", 28x28), `label`."""
    for split in FASHION_MNIST_FILES:
        fashion_mnist_paths(split, data_dir)
    splits = {}
    for split in FASHION_MNIST_FILES:
        images, labels = fashion_mnist_arrays(split, data_dir)
        splits[split] = arrays_to_dataset({"image": images, "label": labels}, FASHION_MNIST_CLASSES)
    return datasets.DatasetDict(splits)


# ----------------------------------------------------------------------------------------------------------------------
# Any image dataset, run_mae.py style
# ----------------------------------------------------------------------------------------------------------------------


def load_image_datasets(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    train_val_split: float | None = 0.15,
    cache_dir: str | None = None,
    seed: int = 42,
    image_column_name: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    token: str | bool | None = None,
    listing: str | None = None,
) -> tuple[datasets.DatasetDict, str]:
    """Load "train" and "validation" (and "test" when the source has one); return them and the image column's name.

    `dataset_name` goes to `datasets.load_dataset`, except "fashion_mnist" (and aliases) and "cluttered_fashion_mnist",
    which are built offline; their test split serves as "validation" and stays as "test". For the cluttered set,
    `dataset_config_name` may override its generator, e.g. "canvas_size=112,seed=1" (see
    `modeling_gpa.data.cluttered.load_cluttered_fashion_mnist`). Otherwise `train_dir` (and optionally `validation_dir`)
    are read with the "imagefolder" builder; a `train_dir` that holds parquet or webdataset tar shards is read as
    `dataset_name` would be. Without a validation split, a seeded `train_val_split` fraction of "train" becomes
    "validation" (the count is logged); `train_val_split=0` keeps all of "train" and leaves no "validation". As in
    Hugging Face's run_mae.py, `max_train_samples` / `max_eval_samples` keep a seeded random subset of "train" /
    "validation"; the cluttered set then only generates that many images. `token` reaches the Hub. `listing` shares
    one listing of an image folder between the processes of a node: "write" lists it and records the result, "reuse"
    reads that record (no glob, no `stat` per file, no hash of the file list); see [`load_image_folder`].
    """
    if dataset_name in FASHION_MNIST_NAMES or dataset_name == CLUTTERED_FASHION_MNIST_NAME:
        if dataset_name == CLUTTERED_FASHION_MNIST_NAME:
            from .cluttered import load_cluttered_fashion_mnist

            raw = load_cluttered_fashion_mnist(
                cache_dir=cache_dir,
                max_train_samples=max_train_samples,
                max_test_samples=max_eval_samples,
                **_cluttered_options(dataset_config_name),
            )
        else:
            raw = load_fashion_mnist()
        dataset = datasets.DatasetDict({"train": raw["train"], "validation": raw["test"], "test": raw["test"]})
    elif dataset_name is not None or (train_dir is not None and holds_shards(train_dir)):
        dataset = load_from_hub_or_folder(dataset_name or train_dir, dataset_config_name, cache_dir, token)
    elif train_dir is not None:
        dataset = load_image_folder(train_dir, validation_dir, cache_dir, listing)
    else:
        raise ValueError(
            "no dataset given: pass --dataset_name (e.g. fashion_mnist) or --train_dir with an image folder"
        )

    if "train" not in dataset:
        raise ValueError(f"dataset {dataset_name} has no 'train' split (splits: {sorted(dataset)})")
    if "validation" not in dataset and train_val_split:
        if not 0.0 < train_val_split < 1.0:
            raise ValueError(
                f"dataset has no validation split and train_val_split={train_val_split}: "
                "pass --train_val_split in (0, 1), 0 to train on every image, or --validation_dir"
            )
        split = dataset["train"].train_test_split(test_size=train_val_split, seed=seed)
        dataset["train"], dataset["validation"] = split["train"], split["test"]
        logger.warning(
            f"Holding out {len(dataset['validation']):,} of {len(split['train']) + len(split['test']):,} training "
            f"images (--train_val_split {train_val_split}) for eval_loss; they are not pretrained on. Pass "
            "--train_val_split 0 to train on all of them, or --validation_dir for a separate validation set."
        )
    limits = (("train", "max_train_samples", max_train_samples), ("validation", "max_eval_samples", max_eval_samples))
    for split, name, limit in limits:
        if limit is not None and split in dataset:
            if limit < 1:
                raise ValueError(f"{name}={limit} must be a positive number of examples")
            dataset[split] = dataset[split].shuffle(seed=seed).select(range(min(limit, len(dataset[split]))))
    return dataset, image_column(dataset["train"], image_column_name)


def load_image_datasets_of(
    flags, cache_dir: str | None, seed: int, token: str | bool | None = None, listing: str | None = None
) -> tuple[datasets.DatasetDict, str]:
    """[`load_image_datasets`] of the dataset flags every script shares: ``flags`` has ``dataset_name``,
    ``dataset_config_name``, ``train_dir``, ``validation_dir``, ``train_val_split`` and ``image_column_name``."""
    return load_image_datasets(
        dataset_name=flags.dataset_name,
        dataset_config_name=flags.dataset_config_name,
        train_dir=flags.train_dir,
        validation_dir=flags.validation_dir,
        train_val_split=flags.train_val_split,
        cache_dir=cache_dir,
        seed=seed,
        image_column_name=flags.image_column_name,
        token=token,
        listing=listing,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Image folders, listed once per node
# ----------------------------------------------------------------------------------------------------------------------

LISTINGS = ("write", "reuse")


def listing_record_path(train_dir: str, validation_dir: str | None, cache_dir: str | None) -> str:
    """Where the processes of this machine share the listing of these folders: a small JSON file in the cache."""
    key = json.dumps(
        [os.path.abspath(train_dir), validation_dir and os.path.abspath(validation_dir), socket.gethostname()]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(cache_dir or datasets.config.HF_DATASETS_CACHE, "image_folder_listings", f"{digest}.json")


def image_folder_data_files(train_dir: str, validation_dir: str | None) -> dict[str, str]:
    """``data_files`` of `datasets`' imagefolder builder for the folders (every file below each), checked to exist."""
    for flag, directory in (("--train_dir", train_dir), ("--validation_dir", validation_dir)):
        if directory is not None and not os.path.isdir(directory):
            raise FileNotFoundError(f"image folder {directory} does not exist: pass an existing {flag}")
    data_files = {"train": os.path.join(train_dir, "**")}
    if validation_dir is not None:
        data_files["validation"] = os.path.join(validation_dir, "**")
    return data_files


def load_image_folder(
    train_dir: str, validation_dir: str | None, cache_dir: str | None, listing: str | None = None
) -> datasets.DatasetDict:
    """ "train" (and "validation") of `datasets`' imagefolder builder over the folders (class subfolders -> labels).

    Building it lists every file, `stat`s each and hashes the list; the Arrow table it writes holds paths only. With
    ``listing="write"`` (the main process of a node) the table's files are recorded at [`listing_record_path`], and
    with ``listing="reuse"`` (the node's other processes, after the main one) they are opened from that record
    directly: no process but one per node lists the folders.
    """
    if listing is not None and listing not in LISTINGS:
        raise ValueError(f"listing={listing!r}: choose one of {', '.join(LISTINGS)} or None")
    record = listing_record_path(train_dir, validation_dir, cache_dir)
    if listing == "reuse" and os.path.isfile(record):
        with open(record) as file:
            files = json.load(file)
        dataset = datasets.DatasetDict(
            {
                split: datasets.concatenate_datasets([datasets.Dataset.from_file(path) for path in paths])
                for split, paths in files.items()
            }
        )
        # Warning level, like the "Process rank" lines: replicas log nothing below it.
        logger.warning(
            f"Opened the listing of {train_dir} that this machine's main process made ({len(dataset['train']):,} "
            "training images), without listing the folder."
        )
        return dataset
    data_files = image_folder_data_files(train_dir, validation_dir)
    started = time.perf_counter()
    try:
        dataset = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError) as error:
        if "corresponds to no data" in str(error) or isinstance(error, datasets.exceptions.DataFilesNotFoundError):
            raise ValueError(
                f"no images in {train_dir}"
                + (f" or {validation_dir}" if validation_dir else "")
                + ": put image files (in one subfolder per class, or directly) there"
            ) from None
        raise
    logger.info(
        f"Listed {train_dir}: {len(dataset['train']):,} training images in {time.perf_counter() - started:.1f} s."
    )
    if listing == "write":
        os.makedirs(os.path.dirname(record), exist_ok=True)
        files = {split: [cache["filename"] for cache in dataset[split].cache_files] for split in dataset}
        temporary = f"{record}.{os.getpid()}"
        with open(temporary, "w") as file:
            json.dump(files, file)
        os.replace(temporary, record)
    return dataset


def _cluttered_options(config_name: str | None) -> dict[str, float | int]:
    """Parse "canvas_size=112,seed=1,background_strength=0.5,background_blur=0" into keyword arguments."""
    types = {"canvas_size": int, "seed": int, "background_strength": float, "background_blur": float}
    options = {}
    for item in filter(None, (config_name or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in types or not value:
            raise ValueError(
                f"bad --dataset_config_name item {item!r} for cluttered_fashion_mnist: "
                f"use key=value with keys {list(types)}"
            )
        try:
            options[key] = types[key](value)
        except ValueError:
            raise ValueError(f"--dataset_config_name {key}={value!r} is not a valid {types[key].__name__}") from None
    return options


# ----------------------------------------------------------------------------------------------------------------------
# The Hub, and folders of shards in its layout
# ----------------------------------------------------------------------------------------------------------------------

SHARD_SUFFIXES = (".parquet", ".tar")


def holds_shards(directory: str) -> bool:
    """Whether ``directory`` (or its ``data/`` subfolder, the Hub's layout) holds parquet or webdataset tar shards.

    Reads two directory entries lists at most: an image folder's class subfolders are not walked."""
    for folder in (directory, os.path.join(directory, "data")):
        if os.path.isdir(folder):
            with os.scandir(folder) as entries:
                if any(entry.is_file() and entry.name.endswith(SHARD_SUFFIXES) for entry in entries):
                    return True
    return False


def hub_error_message(name: str, error: Exception) -> str | None:
    """One line saying why `datasets.load_dataset(name)` failed and what to do, for the failures a user can fix."""
    text = str(error)
    if isinstance(error, datasets.exceptions.DatasetNotFoundError) and "gated" in text:
        return (
            f"dataset {name} is gated on the Hub: accept its conditions on its page with your account, then pass "
            "--token (or set HF_TOKEN, or run `hf auth login`)"
        )
    if isinstance(error, datasets.exceptions.DatasetNotFoundError) and "Revision" in text:
        return f"{text.rstrip('.')}: pass an existing --dataset_config_name / revision"
    if isinstance(error, datasets.exceptions.DatasetNotFoundError | datasets.exceptions.DataFilesNotFoundError):
        if os.path.isdir(name):
            return f"no images or shards in {name}: put parquet or webdataset tar shards (or image files) there"
        return (
            f"dataset {name} does not exist on the Hub, or is private: check the name, pass --token for a private "
            "dataset, or give a local folder"
        )
    if isinstance(error, ConnectionError):
        return (
            f"cannot reach the Hub for dataset {name} (no network, or HF_HUB_OFFLINE=1): pass a local folder "
            "(--train_dir, or --dataset_name DIR for parquet / webdataset shards) or --dataset_name fashion_mnist"
        )
    return None


def load_from_hub_or_folder(
    name: str,
    config_name: str | None,
    cache_dir: str | None,
    token: str | bool | None = None,
    streaming: bool = False,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """`datasets.load_dataset(name, ...)` as a dict of splits, with a one-line error for the failures a user can fix
    ([`hub_error_message`]). ``name`` is a Hub id or a local folder of shards (parquet, webdataset tars)."""
    try:
        dataset = datasets.load_dataset(name, config_name, cache_dir=cache_dir, token=token, streaming=streaming)
    except (
        ConnectionError,
        datasets.exceptions.DatasetNotFoundError,
        datasets.exceptions.DataFilesNotFoundError,
    ) as error:
        message = hub_error_message(name, error)
        if message is None:
            raise
        raise ValueError(message) from error
    if not isinstance(dataset, datasets.DatasetDict | datasets.IterableDatasetDict):
        dictionary = datasets.IterableDatasetDict if streaming else datasets.DatasetDict
        dataset = dictionary({"train": dataset})
    return dataset


def image_column(dataset: datasets.Dataset, image_column_name: str | None = None) -> str:
    """The image column: `image_column_name` if given, else "image" or "img", else the first Image feature."""
    columns = dataset.column_names
    if (column := named_column(columns, image_column_name, ("image", "img"), "image")) is not None:
        return column
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise ValueError(f"no image column among {columns}: pass --image_column_name")


def _as_channel_tuple(values: float | Sequence[float], num_channels: int, name: str) -> tuple[float, ...]:
    values = (float(values),) if isinstance(values, int | float) else tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * num_channels
    if len(values) != num_channels:
        raise ValueError(f"{name} has {len(values)} values but num_channels={num_channels}: give one value per channel")
    return values


# ----------------------------------------------------------------------------------------------------------------------
# Image processor (saved beside checkpoints)
# ----------------------------------------------------------------------------------------------------------------------


def build_image_processor(
    image_size: int,
    num_channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ViTImageProcessorPil:
    """A ViT image processor holding size and normalisation; saved as "ViTImageProcessor", so AutoImageProcessor loads
    it with or without torchvision. Defaults: ImageNet mean/std for 3 channels, Fashion-MNIST's (0.2860/0.3530) for 1.
    """
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels={num_channels} is not supported: use 1 (grayscale) or 3 (RGB)")
    default_mean, default_std = (
        (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if num_channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)
    )
    mean = _as_channel_tuple(default_mean if mean is None else mean, num_channels, "mean")
    std = _as_channel_tuple(default_std if std is None else std, num_channels, "std")
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BICUBIC,
        image_mean=list(mean),
        image_std=list(std),
    )


def transforms_from_processor(processor, num_channels: int, train: bool) -> TrainCrop | EvalCrop:
    """The pretraining (`train=True`) or evaluation crop at the processor's size; its mean/std normalise on the device
    (`modeling_gpa.data.pipeline.PixelNormalizer`)."""
    height, width = processor.size["height"], processor.size["width"]
    if height != width:
        raise ValueError(f"image processor size {height}x{width} is not square: GPA models take square images")
    if len(processor.image_mean) != num_channels:
        raise ValueError(
            f"image processor has {len(processor.image_mean)} mean values but num_channels={num_channels}: "
            "build it with build_image_processor(image_size, num_channels)"
        )
    return TrainCrop(height, num_channels) if train else EvalCrop(height, num_channels)


def with_pixel_values(
    dataset: datasets.Dataset,
    crop: TrainCrop | EvalCrop,
    image_column: str,
    label_column: str | None = None,
    strict: bool = False,
) -> ImageDataset:
    """A view of `dataset` whose rows are {"pixel_values": (C, H, W) uint8} (plus "labels" if `label_column` is given).

    Images are decoded when read; an unreadable one is replaced by the next readable image and counted, or with
    `strict=True` raises `UnreadableImageError` naming the file (see `modeling_gpa.data.pipeline.ImageDataset`).
    """
    return ImageDataset(dataset, crop, image_column, label_column, strict=strict)


__all__ = [
    "arrays_to_dataset",
    "encode_gray_images",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_image_processor",
    "collate_pixel_values",
    "collate_pixel_values_and_labels",
    "image_column",
    "image_folder_data_files",
    "load_fashion_mnist",
    "load_image_datasets",
    "load_image_datasets_of",
    "load_image_folder",
    "load_from_hub_or_folder",
    "holds_shards",
    "hub_error_message",
    "random_resized_crop_box",
    "to_num_channels",
    "transforms_from_processor",
    "with_pixel_values",
]
