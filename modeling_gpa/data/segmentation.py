"""Semantic segmentation data: Hub datasets in ``scene_parse_150``'s layout, ADE20K's ``ADEChallengeData2016`` folders,
cluttered Fashion-MNIST with per-pixel garment classes, and the mmsegmentation pipeline as torchvision v2 transforms
on the image and its label map together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .fashion_mnist import FASHION_MNIST_CLASSES

if TYPE_CHECKING:
    import datasets

IGNORE_INDEX = 255
ADE_SPLITS = {"train": "training", "validation": "validation"}
CLUTTERED_SEGMENTATION_CLASSES = ("background", *FASHION_MNIST_CLASSES)


def load_ade_folder(root: str) -> datasets.DatasetDict:
    """``ADEChallengeData2016/{images,annotations}/{training,validation}`` -> "train" / "validation" splits with
    ``image`` and ``annotation`` columns (scene_parse_150's layout), the pairs matched by file stem."""
    import datasets

    splits = {}
    for split, folder in ADE_SPLITS.items():
        images_dir, annotations_dir = Path(root, "images", folder), Path(root, "annotations", folder)
        for directory in (images_dir, annotations_dir):
            if not directory.is_dir():
                raise ValueError(
                    f"--train_dir {root!r} has no folder {directory}: pass the ADEChallengeData2016 folder, which "
                    "holds images/{training,validation} and annotations/{training,validation}."
                )
        images = sorted(images_dir.glob("*.jpg")) or sorted(images_dir.glob("*.png"))
        annotations = [annotations_dir / f"{path.stem}.png" for path in images]
        lacking = [path.name for path in annotations if not path.is_file()]
        if not images or lacking:
            raise ValueError(
                f"{annotations_dir} lacks the annotations of {len(lacking)} images (e.g. {lacking[:1]}) or "
                f"{images_dir} holds no .jpg/.png: each image needs annotations/{folder}/<stem>.png."
            )
        columns = {"image": [str(p) for p in images], "annotation": [str(p) for p in annotations]}
        dataset = datasets.Dataset.from_dict(columns)
        splits[split] = dataset.cast_column("image", datasets.Image()).cast_column("annotation", datasets.Image())
    return datasets.DatasetDict(splits)


def load_cluttered_segmentation(cache_dir: str | None = None, **kwargs) -> datasets.DatasetDict:
    """Cluttered Fashion-MNIST (one garment per canvas on a natural texture) for segmentation: ``annotation`` holds
    0 for the background and 1 + the garment's class on its pixels (11 classes). ``kwargs``: those of
    ``load_cluttered_fashion_mnist`` (``max_train_samples``, ``canvas_size``...)."""
    from .cluttered import load_cluttered_fashion_mnist

    dataset = load_cluttered_fashion_mnist(cache_dir=cache_dir, **kwargs)
    return dataset.map(_garment_annotations, batched=True, remove_columns=["object_mask", "label"])


def _garment_annotations(batch: dict) -> dict:
    from PIL import Image

    annotations = []
    for mask, label in zip(batch["object_mask"], batch["label"], strict=True):
        annotations.append(Image.fromarray(((np.asarray(mask) > 0) * (label + 1)).astype(np.uint8)))
    return {"annotation": annotations}


@dataclass
class SegmentationTransform:
    """mmsegmentation's ADE20K pipeline on (image, label map) pairs, with torchvision v2.

    Training: rescale keeping the aspect ratio so the image fits ``image_scale`` times a random ratio in
    ``ratio_range`` (bilinear, the labels nearest), random ``crop_size`` crop (padded with 0 and ``IGNORE_INDEX``),
    horizontal flip, photometric distortion (brightness, contrast, saturation, hue), normalisation. Evaluation:
    rescale to fit ``image_scale`` and normalise; the label map keeps its size (predictions are resized to it).
    """

    crop_size: int
    image_scale: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ratio_range: tuple[float, float] = (0.5, 2.0)
    train: bool = True

    def __post_init__(self):
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        self.augment = v2.Compose(
            [
                v2.RandomCrop(
                    self.crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
                ),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18 / 360),
            ]
        )
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    def rescaled_size(self, height: int, width: int) -> tuple[int, int]:
        """mmsegmentation's ``Resize(keep_ratio=True)``: the largest size within ``image_scale`` (long, short sides,
        whatever the orientation) times a ratio drawn from ``ratio_range`` in training."""
        ratio = float(torch.empty(()).uniform_(*self.ratio_range)) if self.train else 1.0
        long, short = max(self.image_scale) * ratio, min(self.image_scale) * ratio
        scale = min(long / max(height, width), short / min(height, width))
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, H, W) uint8 image, (H, W) int64 label map -> (C, h, w) float pixels, label map (cropped in training)."""
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        size = self.rescaled_size(*image.shape[-2:])
        image = F.resize(tv_tensors.Image(image), size, antialias=True)
        if self.train:
            label = F.resize(tv_tensors.Mask(label), size, interpolation=InterpolationMode.NEAREST_EXACT)
            image, label = self.augment(image, label)
        return self.normalize(image).as_subclass(torch.Tensor), label.as_subclass(torch.Tensor)


def label_map(annotation, num_labels: int, reduce_labels: bool, what: str) -> torch.Tensor:
    """A PIL annotation -> (H, W) int64 labels in [0, num_labels) or ``IGNORE_INDEX``; ``reduce_labels``: 0 becomes
    ``IGNORE_INDEX`` and the rest drop by one (ADE20K). A one-line ``ValueError`` names ``what`` otherwise."""
    labels = torch.from_numpy(np.array(annotation, dtype=np.int64))
    if labels.ndim != 2:
        raise ValueError(
            f"{what}: the annotation has shape {tuple(labels.shape)}; a label map is one channel (mode L/P)."
        )
    if reduce_labels:
        labels = torch.where(labels == 0, IGNORE_INDEX, labels - 1)
        labels[labels == IGNORE_INDEX - 1] = IGNORE_INDEX
    outside = (labels >= num_labels) & (labels != IGNORE_INDEX)
    if outside.any():
        raise ValueError(
            f"{what}: label {int(labels[outside].max())} is outside num_labels={num_labels} (valid: 0..{num_labels - 1}"
            f" and {IGNORE_INDEX} for ignored pixels); pass the dataset's --num_labels or --do_reduce_labels."
        )
    return labels


def segmentation_batch_transform(
    transform: SegmentationTransform, num_labels: int, reduce_labels: bool, num_channels: int
) -> Callable[[dict], dict]:
    """A ``Dataset.with_transform`` function: rows with ``image`` and ``annotation`` (PIL) -> ``pixel_values`` and
    ``labels`` lists, checking that each annotation has its image's size and labels within ``num_labels``."""

    def apply(batch: dict) -> dict:
        pixel_values, labels = [], []
        for index, (image, annotation) in enumerate(zip(batch["image"], batch["annotation"], strict=True)):
            if image.size != annotation.size:
                raise ValueError(
                    f"row {index} of the batch: its annotation is {annotation.size[0]}x{annotation.size[1]} but its "
                    f"image {image.size[0]}x{image.size[1]}; each label map must have its image's size."
                )
            mode = "L" if num_channels == 1 else "RGB"
            pixels = torch.from_numpy(np.array(image.convert(mode))).reshape(image.size[1], image.size[0], -1)
            target = label_map(annotation, num_labels, reduce_labels, f"row {index} of the batch")
            pixels, target = transform(pixels.permute(2, 0, 1), target)
            pixel_values.append(pixels)
            labels.append(target)
        return {"pixel_values": pixel_values, "labels": labels}

    return apply


def collate_segmentation(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Rows of equal-sized ``pixel_values`` (C, H, W) and ``labels`` (H, W) -> (B, C, H, W) and (B, H, W) tensors."""
    return {
        "pixel_values": torch.stack([row["pixel_values"] for row in rows]),
        "labels": torch.stack([row["labels"] for row in rows]),
    }
