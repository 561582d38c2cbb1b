"""Image datasets, MAE transforms and collators for GPA pretraining and evaluation.

No torchvision: the transforms are written with PIL and torch, and draw their randomness from torch's global RNG, so
DataLoader workers (which torch seeds per worker) are reproducible.

Channels: a model has a fixed `num_channels`. Images of any PIL mode are converted to it by `to_num_channels`
(RGB photos become luminance for a 1-channel model, grayscale images are replicated to RGB for a 3-channel one), so a
channel mismatch between a dataset and a model is never an error.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from PIL import Image
from transformers import ViTImageProcessorPil

from .fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, fashion_mnist_arrays, fashion_mnist_paths

FASHION_MNIST_NAMES = ("fashion_mnist", "zalando-datasets/fashion_mnist", "fashion-mnist")
CLUTTERED_FASHION_MNIST_NAME = "cluttered_fashion_mnist"
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Datasets encoded by `encode_gray_images` carry this builder name; their images cannot be unreadable, so
# `drop_unreadable_images` skips decoding them.
IN_MEMORY_BUILDER = "modeling_gpa_arrays"


# ----------------------------------------------------------------------------------------------------------------------
# Datasets from arrays; Fashion-MNIST from the Debian package
# ----------------------------------------------------------------------------------------------------------------------


def encode_gray_images(images: np.ndarray, image_format: str = "pgm") -> list[dict]:
    """Encode (N, H, W) uint8 arrays as `datasets.Image` values that PIL opens as mode "L".

    "pgm" is the raw pixels behind a 15-byte header: 60k images encode in a fraction of a second (PNG takes ~5 s).
    "png" is slower to write but far smaller for flat images such as binary masks.
    """
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected (N, H, W) uint8 images, got {images.dtype} {images.shape}")
    if image_format == "png":
        return [{"bytes": _png_bytes(image), "path": None} for image in images]
    if image_format != "pgm":
        raise ValueError(f"image_format={image_format!r} is not supported: use 'pgm' or 'png'")
    _, height, width = images.shape
    header = f"P5\n{width} {height}\n255\n".encode()
    return [{"bytes": header + image.tobytes(), "path": None} for image in np.ascontiguousarray(images)]


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def arrays_to_dataset(
    columns: dict[str, np.ndarray], class_names: Sequence[str], png_columns: Sequence[str] = ()
) -> datasets.Dataset:
    """Build a Dataset from (N, H, W) uint8 image arrays (each a `datasets.Image` column) and a `label` array.

    Image columns are stored as PGM, those in `png_columns` as PNG (see `encode_gray_images`).
    """
    features, values = {}, {}
    for name, array in columns.items():
        if name == "label":
            features[name] = datasets.ClassLabel(names=list(class_names))
            values[name] = array.astype(np.int64)
        else:
            features[name] = datasets.Image()
            values[name] = encode_gray_images(array, "png" if name in png_columns else "pgm")
    features = datasets.Features(features)
    info = datasets.DatasetInfo(builder_name=IN_MEMORY_BUILDER, features=features)
    return datasets.Dataset.from_dict(values, features=features, info=info)


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
) -> tuple[datasets.DatasetDict, str]:
    """Load "train" and "validation" (and "test" when the source has one); return them and the image column's name.

    `dataset_name` goes to `datasets.load_dataset`, except "fashion_mnist" (and aliases) and "cluttered_fashion_mnist",
    which are built offline; their test split serves as "validation" and stays as "test". For the cluttered set,
    `dataset_config_name` may override its generator, e.g. "canvas_size=112,seed=1" (see
    `modeling_gpa.cluttered.load_cluttered_fashion_mnist`). Otherwise `train_dir` (and optionally `validation_dir`)
    are read with the "imagefolder" builder. Without a validation split, a seeded `train_val_split` fraction of "train"
    becomes "validation". As in Hugging Face's run_mae.py, `max_train_samples` / `max_eval_samples` keep a seeded
    random subset of "train" / "validation"; the cluttered set then only generates that many images.
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
    elif dataset_name is not None:
        dataset = _load_from_hub(dataset_name, dataset_config_name, cache_dir)
    elif train_dir is not None:
        data_files = {"train": os.path.join(train_dir, "**")}
        if validation_dir is not None:
            data_files["validation"] = os.path.join(validation_dir, "**")
        for directory in (train_dir, validation_dir):
            if directory is not None and not os.path.isdir(directory):
                raise FileNotFoundError(f"image folder {directory} does not exist: pass an existing --train_dir")
        dataset = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
    else:
        raise ValueError(
            "no dataset given: pass --dataset_name (e.g. fashion_mnist) or --train_dir with an image folder"
        )

    if "train" not in dataset:
        raise ValueError(f"dataset {dataset_name} has no 'train' split (splits: {sorted(dataset)})")
    if "validation" not in dataset:
        if not train_val_split or not 0.0 < train_val_split < 1.0:
            raise ValueError(
                f"dataset has no validation split and train_val_split={train_val_split}: "
                "pass --train_val_split in (0, 1) or --validation_dir"
            )
        split = dataset["train"].train_test_split(test_size=train_val_split, seed=seed)
        dataset["train"], dataset["validation"] = split["train"], split["test"]
    limits = (("train", "max_train_samples", max_train_samples), ("validation", "max_eval_samples", max_eval_samples))
    for split, name, limit in limits:
        if limit is not None:
            if limit < 1:
                raise ValueError(f"{name}={limit} must be a positive number of examples")
            dataset[split] = dataset[split].shuffle(seed=seed).select(range(min(limit, len(dataset[split]))))
    return dataset, image_column(dataset["train"], image_column_name)


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


def _load_from_hub(name: str, config_name: str | None, cache_dir: str | None) -> datasets.DatasetDict:
    """`datasets.load_dataset` with a one-line error when the Hub cannot be reached."""
    try:
        dataset = datasets.load_dataset(name, config_name, cache_dir=cache_dir)
    except (ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
        raise ValueError(
            f"could not load dataset {name} from the Hub (no network?): pass --train_dir with a local image folder "
            "or --dataset_name fashion_mnist"
        ) from error
    if not isinstance(dataset, datasets.DatasetDict):
        dataset = datasets.DatasetDict({"train": dataset})
    return dataset


def image_column(dataset: datasets.Dataset, image_column_name: str | None = None) -> str:
    """The image column: `image_column_name` if given, else "image" or "img", else the first Image feature."""
    columns = dataset.column_names
    if image_column_name is not None:
        if image_column_name not in columns:
            raise ValueError(
                f"image column {image_column_name!r} not found: --image_column_name must be one of {columns}"
            )
        return image_column_name
    for name in ("image", "img"):
        if name in columns:
            return name
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise ValueError(f"no image column among {columns}: pass --image_column_name")


# ----------------------------------------------------------------------------------------------------------------------
# Unreadable images
# ----------------------------------------------------------------------------------------------------------------------


def _image_error(value: dict | None) -> str | None:
    """Why an undecoded `datasets.Image` value ({"bytes", "path"}) cannot be read, or None if it decodes."""
    if value is None:
        return "missing image"
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        with Image.open(source) as image:
            image.load()
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad files
        return f"{type(error).__name__}: {error}"
    return None


def drop_unreadable_images(
    dataset: datasets.Dataset, image_column: str, strict: bool = False
) -> tuple[datasets.Dataset, int]:
    """Decode every image once; return the dataset without the unreadable ones and how many were dropped.

    With `strict=True`, raise a one-line ValueError naming the first bad file instead. Datasets built in memory from
    arrays (`arrays_to_dataset`, e.g. Fashion-MNIST) are returned unchanged without decoding.
    """
    if dataset.info.builder_name == IN_MEMORY_BUILDER:
        return dataset, 0
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))
    errors = raw.map(
        lambda batch: {"error": [_image_error(value) or "" for value in batch[image_column]]},
        batched=True,
        batch_size=1000,
        remove_columns=raw.column_names,
        desc="Checking images",
    )["error"]
    bad = [(index, reason) for index, reason in enumerate(errors) if reason]
    if not bad:
        return dataset, 0
    if strict:
        index, reason = bad[0]
        value = raw[index][image_column] or {}
        name = value.get("path") or f"example {index}"
        raise ValueError(
            f"unreadable image {name} ({reason}; {len(bad)} bad in total): remove it or drop --strict_images"
        )
    bad_indices = {index for index, _ in bad}
    keep = [index for index in range(len(dataset)) if index not in bad_indices]
    return dataset.select(keep), len(bad)


# ----------------------------------------------------------------------------------------------------------------------
# Channels and transforms
# ----------------------------------------------------------------------------------------------------------------------


def to_num_channels(image: Image.Image, num_channels: int) -> Image.Image:
    """Convert an image of any PIL mode to "L" (`num_channels=1`) or "RGB" (`num_channels=3`).

    Transparency is dropped (the colour under it is kept); 16-bit and float grayscale are rescaled to 8 bits.
    """
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels={num_channels} is not supported: images convert to 1 (L) or 3 (RGB) channels")
    target = "L" if num_channels == 1 else "RGB"
    if image.mode == target:
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_depth_to_l(image)
    return image.convert(target)


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit integer or float grayscale to "L": 16-bit divides by 257, float in [0, 1] scales by 255."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and pixels.size and pixels.max() <= 1.0:
        pixels = pixels * 255.0
    elif image.mode != "F" and pixels.size and pixels.max() > 255:
        pixels = pixels / 257.0
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (top, left, height, width): 10 tries, then the central crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)).item())
            left = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _as_channel_tuple(values: float | Sequence[float], num_channels: int, name: str) -> tuple[float, ...]:
    values = (float(values),) if isinstance(values, int | float) else tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * num_channels
    if len(values) != num_channels:
        raise ValueError(f"{name} has {len(values)} values but num_channels={num_channels}: give one value per channel")
    return values


@dataclass
class _ImageTransform:
    """Shared part of the transforms: channel conversion, PIL -> (C, H, W) float tensor, normalisation."""

    image_size: int
    num_channels: int
    mean: Sequence[float]
    std: Sequence[float]

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size={self.image_size} must be positive")
        self.mean = _as_channel_tuple(self.mean, self.num_channels, "mean")
        self.std = _as_channel_tuple(self.std, self.num_channels, "std")
        if min(self.std) <= 0:
            raise ValueError(f"std={self.std} must be positive")

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """(C, H, W) float32, normalised with mean/std after scaling to [0, 1]."""
        pixels = torch.from_numpy(np.array(image, dtype=np.float32, copy=True)) / 255.0
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (pixels - mean) / std


@dataclass
class PretrainTransform(_ImageTransform):
    """MAE pretraining augmentation: RandomResizedCrop(scale, ratio, bicubic) + horizontal flip + normalise."""

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_num_channels(image, self.num_channels)
        top, left, h, w = random_resized_crop_box(image.width, image.height, self.scale, self.ratio)
        size = (self.image_size, self.image_size)
        image = image.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        if torch.rand(1).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.to_tensor(image)


@dataclass
class EvalTransform(_ImageTransform):
    """Deterministic evaluation view: resize the shorter side, center-crop `image_size`, normalise.

    Images at least `image_size * crop_ratio` on their shorter side are resized to that length and center-cropped, as
    MAE does (256 -> 224). Smaller images (28x28 Fashion-MNIST, 32x32 CIFAR) are resized so the shorter side is exactly
    `image_size`: upsampling them adds no detail, and the crop margin would only cut away the object's border.
    """

    crop_ratio: float = 256 / 224

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_num_channels(image, self.num_channels)
        resize_to = int(self.image_size * self.crop_ratio)
        short = resize_to if min(image.size) >= resize_to else self.image_size
        scale = short / min(image.size)
        new_size = (max(short, round(image.width * scale)), max(short, round(image.height * scale)))
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BICUBIC)
        left = (image.width - self.image_size) // 2
        top = (image.height - self.image_size) // 2
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return self.to_tensor(image)


def pretrain_transform(
    image_size: int, num_channels: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """MAE's pretraining transform: PIL image -> float tensor (num_channels, image_size, image_size)."""
    return PretrainTransform(image_size, num_channels, mean, std)


def eval_transform(
    image_size: int, num_channels: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """Resize + center-crop evaluation transform: PIL image -> float tensor (num_channels, image_size, image_size)."""
    return EvalTransform(image_size, num_channels, mean, std)


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


def transforms_from_processor(processor, num_channels: int, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The pretraining (`train=True`) or evaluation transform with the processor's size and mean/std."""
    height, width = processor.size["height"], processor.size["width"]
    if height != width:
        raise ValueError(f"image processor size {height}x{width} is not square: GPA models take square images")
    if len(processor.image_mean) != num_channels:
        raise ValueError(
            f"image processor has {len(processor.image_mean)} mean values but num_channels={num_channels}: "
            "build it with build_image_processor(image_size, num_channels)"
        )
    build = pretrain_transform if train else eval_transform
    return build(height, num_channels, processor.image_mean, processor.image_std)


# ----------------------------------------------------------------------------------------------------------------------
# On-the-fly pixel values and collators
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _PixelValuesTransform:
    """Batch transform for `Dataset.with_transform` (a class, so DataLoader workers can pickle it)."""

    transform: Callable[[Image.Image], torch.Tensor]
    image_column: str
    num_channels: int
    label_column: str | None = None

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        output = {
            "pixel_values": [
                self.transform(to_num_channels(image, self.num_channels)) for image in batch[self.image_column]
            ]
        }
        if self.label_column is not None:
            output["labels"] = batch[self.label_column]
        return output


def with_pixel_values(
    dataset: datasets.Dataset,
    transform: Callable[[Image.Image], torch.Tensor],
    image_column: str,
    num_channels: int,
    label_column: str | None = None,
) -> datasets.Dataset:
    """A view of `dataset` whose rows are {"pixel_values": (C, H, W)} (plus "labels" if `label_column` is given)."""
    columns = [image_column] + ([label_column] if label_column is not None else [])
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"column {missing[0]!r} not in dataset: available columns are {dataset.column_names}")
    return dataset.with_transform(
        _PixelValuesTransform(transform, image_column, num_channels, label_column), columns=columns
    )


def collate_pixel_values(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack examples into {"pixel_values": (B, C, H, W)}."""
    return {"pixel_values": torch.stack([example["pixel_values"] for example in examples])}


def collate_pixel_values_and_labels(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack examples into {"pixel_values": (B, C, H, W), "labels": (B,) int64}."""
    batch = collate_pixel_values(examples)
    batch["labels"] = torch.tensor([int(example["labels"]) for example in examples], dtype=torch.long)
    return batch
