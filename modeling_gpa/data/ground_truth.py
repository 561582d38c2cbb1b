"""Ground-truth object masks for few-shot attention selection, and their patch-level form.

Three sources give a (H, W) bool mask per image, at the image's own size:

- a folder of binary masks beside the images: ``<image_dir>/masks/<stem>.png`` for ``<image_dir>/<stem>.jpg``;
- bounding boxes in a JSON file, ``{"file.jpg": [[x0, y0, x1, y1], ...]}`` in pixels of the original image;
- a ``datasets.Dataset``: its ``object_mask`` column (cluttered Fashion-MNIST), or the non-zero pixels of the image
  itself (plain Fashion-MNIST: the garment on a black background).

``object_patches`` turns pixel masks at the model's size into patch masks in ViT's patch order, and
``annotated_model_inputs`` draws a few annotated images from one source as the model's tensors: what few-shot
attention selection (``modeling_gpa.head_selection``) takes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .image_inputs import ImageSettings, resize_masks

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Above this share of object pixels, "non-zero is object" has no background to tell apart: not a black-background set.
MAX_NONZERO_COVERAGE = 0.95


@dataclass
class AnnotatedImages:
    """Images with one (H, W) bool object mask each, at the image's own size; ``names`` identify them in errors."""

    images: list[Image.Image]
    masks: list[np.ndarray]
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> AnnotatedImages:
        return AnnotatedImages(
            [self.images[i] for i in indices], [self.masks[i] for i in indices], [self.names[i] for i in indices]
        )

    def to_model_inputs(
        self, settings: ImageSettings, patch_size: int | Sequence[int], min_fraction: float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) pixel values and (B, n) bool object patches, image and mask resized alike."""
        pixel_values = settings.to_pixel_values(self.images)
        return pixel_values, object_patches(resize_masks(self.masks, settings.image_size), patch_size, min_fraction)


def object_patches(
    pixel_mask: torch.Tensor, patch_size: int | Sequence[int], min_fraction: float = 0.5
) -> torch.Tensor:
    """(B, H, W) bool pixel masks -> (B, n) bool patch masks in ViT's row-major patch order.

    A patch is object when at least ``min_fraction`` of its pixels are object (default: half), so a patch that the
    object merely grazes does not count and a patch it mostly fills does.
    """
    if pixel_mask.dim() != 3:
        raise ValueError(f"pixel_mask must be (B, H, W); got shape {tuple(pixel_mask.shape)}.")
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction={min_fraction!r} is invalid; allowed values: a number in (0, 1].")
    patch_h, patch_w = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    batch, height, width = pixel_mask.shape
    if height % patch_h or width % patch_w:
        raise ValueError(
            f"pixel_mask of {height}x{width} pixels does not split into {patch_h}x{patch_w} patches; "
            "resize the masks to the model's image_size first."
        )
    grid = pixel_mask.float().view(batch, height // patch_h, patch_h, width // patch_w, patch_w)
    return (grid.mean(dim=(2, 4)) >= min_fraction).flatten(1)


def _binary(mask_image: Image.Image) -> np.ndarray:
    """0/1 or 0/255 masks alike; thresholding 0/255 masks at the middle ignores JPEG ringing near the edges."""
    values = np.asarray(mask_image.convert("L"))
    return values > 0 if values.max() <= 1 else values >= 128


def _image_files(image_dir: str) -> list[str]:
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image directory {image_dir!r} does not exist; pass a folder of images.")
    files = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir!r}.")
    return files


def masks_from_folder(image_dir: str, masks_dir: str | None = None) -> AnnotatedImages:
    """Every image in ``image_dir`` with its mask ``<masks_dir>/<stem>.<ext>`` (default ``<image_dir>/masks``).

    Non-zero mask pixels are object (0/255 masks are thresholded at 128). Masks must have their image's size.
    """
    masks_dir = masks_dir or os.path.join(image_dir, "masks")
    if not os.path.isdir(masks_dir):
        raise FileNotFoundError(f"mask directory {masks_dir!r} does not exist; put <stem>.png masks there.")
    mask_by_stem = {os.path.splitext(f)[0]: f for f in reversed(_image_files(masks_dir))}
    files = _image_files(image_dir)
    missing = [f for f in files if os.path.splitext(f)[0] not in mask_by_stem]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(files)} images in {image_dir!r} have no mask in {masks_dir!r} "
            f"(first: {missing[0]!r}, expected {os.path.splitext(missing[0])[0]}.png)."
        )
    annotated = AnnotatedImages([], [], [])
    for file in files:
        image = Image.open(os.path.join(image_dir, file))
        mask = _binary(Image.open(os.path.join(masks_dir, mask_by_stem[os.path.splitext(file)[0]])))
        if mask.shape != (image.height, image.width):
            raise ValueError(
                f"mask of {file!r} is {mask.shape[1]}x{mask.shape[0]} but the image is {image.width}x{image.height}; "
                "masks must have their image's size."
            )
        annotated.images.append(image)
        annotated.masks.append(mask)
        annotated.names.append(file)
    return annotated


def _box_mask(name: str, boxes: object, width: int, height: int) -> np.ndarray:
    """Union of ``[x0, y0, x1, y1]`` boxes (x1, y1 exclusive, clipped to the image) as a (height, width) mask."""
    mask = np.zeros((height, width), dtype=bool)
    if not isinstance(boxes, list):
        raise ValueError(f"boxes of {name!r} must be a list of [x0, y0, x1, y1]; got {boxes!r}.")
    for index, box in enumerate(boxes):
        valid = isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
        if not valid or box[0] >= box[2] or box[1] >= box[3]:
            raise ValueError(
                f"box {index} of {name!r} is {box!r}; expected [x0, y0, x1, y1] in pixels with x0 < x1 and y0 < y1."
            )
        x0, y0 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
        x1, y1 = min(math.ceil(box[2]), width), min(math.ceil(box[3]), height)
        mask[y0:y1, x0:x1] = True
    return mask


def masks_from_boxes(image_dir: str, boxes_json: str) -> AnnotatedImages:
    """The images named in ``boxes_json`` (``{"file.jpg": [[x0, y0, x1, y1], ...]}``), object = union of the boxes.

    Coordinates are pixels of the original image; ``x1`` and ``y1`` are exclusive (a box ``[0, 0, 2, 2]`` covers
    4 pixels); fractional coordinates grow the box to whole pixels; boxes are clipped to the image.
    """
    try:
        with open(boxes_json, encoding="utf-8") as handle:
            boxes_by_file = json.load(handle)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"boxes file {boxes_json!r} does not exist.") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"boxes file {boxes_json!r} is not valid JSON ({error}).") from error
    if not isinstance(boxes_by_file, dict) or not boxes_by_file:
        raise ValueError(f'boxes file {boxes_json!r} must hold {{"file.jpg": [[x0, y0, x1, y1], ...]}}.')
    annotated = AnnotatedImages([], [], [])
    for file in sorted(boxes_by_file):
        path = os.path.join(image_dir, file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{boxes_json!r} names {file!r}, which is not in {image_dir!r}.")
        image = Image.open(path)
        annotated.images.append(image)
        annotated.masks.append(_box_mask(file, boxes_by_file[file], image.width, image.height))
        annotated.names.append(file)
    return annotated


def masks_from_dataset(
    dataset,
    indices: Sequence[int] | None = None,
    *,
    image_column: str = "image",
    mask_column: str | None = "auto",
) -> AnnotatedImages:
    """Rows ``indices`` (default: all) of a ``datasets.Dataset`` of PIL images with their object masks.

    ``mask_column``: a column of PIL masks (non-zero = object); ``None`` takes the image's non-zero pixels as the
    object, right for Fashion-MNIST (garments on black); ``"auto"`` uses ``object_mask`` when the dataset has it,
    else non-zero pixels. A transform set with ``with_transform`` is ignored: the raw images are read.
    """
    raw = dataset.with_format(None)
    if mask_column == "auto":
        mask_column = "object_mask" if "object_mask" in raw.column_names else None
    for column in (image_column, mask_column):
        if column is not None and column not in raw.column_names:
            raise ValueError(
                f"the dataset has no {column!r} column (columns: {', '.join(raw.column_names)}); "
                "name the image and mask columns."
            )
    rows = list(raw if indices is None else raw.select(indices))
    images = [row[image_column] for row in rows]
    if mask_column is None:
        masks = [np.asarray(image.convert("L")) > 0 for image in images]
        coverage = float(np.mean([mask.mean() for mask in masks]))
        if coverage > MAX_NONZERO_COVERAGE:
            raise ValueError(
                f"non-zero pixels cover {coverage:.0%} of these images, so they have no black background to take the "
                "object from; give object masks (a mask column, a masks folder or a boxes JSON)."
            )
    else:
        masks = [_binary(row[mask_column]) for row in rows]
    names = [f"row {i}" for i in (range(len(images)) if indices is None else indices)]
    return AnnotatedImages(images, masks, names)


def annotated_model_inputs(
    count: int,
    settings: ImageSettings,
    patch_size: int | Sequence[int],
    *,
    dataset=None,
    image_column: str = "image",
    mask_column: str | None = "auto",
    image_dir: str | None = None,
    masks_dir: str | None = None,
    boxes_json: str | None = None,
    min_object_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` annotated images drawn at random (``seed``) from one source -> (count, C, H, W), (count, n) bool.

    The source: ``image_dir`` with ``boxes_json`` (``masks_from_boxes``), else ``image_dir`` with its masks folder
    (``masks_from_folder``, ``masks_dir`` default ``<image_dir>/masks``), else ``dataset``: a ``datasets.Dataset``
    (``masks_from_dataset`` with ``image_column`` / ``mask_column``) or ``AnnotatedImages``. Images and masks are
    resized alike to ``settings.image_size`` and normalised with ``settings``; a patch of ``patch_size`` is object
    when at least ``min_object_fraction`` of its pixels are. The same ``seed`` draws the same images in the same
    order whatever ``count`` is, so of a draw of ``N + M`` the first ``N`` are the images a draw of ``N`` gives:
    selection images first, held-out ones after.
    """
    if image_dir is None and (boxes_json or masks_dir):
        raise ValueError("a boxes JSON or a masks folder needs the folder of its images: pass image_dir too.")
    if image_dir is not None:
        dataset = masks_from_boxes(image_dir, boxes_json) if boxes_json else masks_from_folder(image_dir, masks_dir)
    if dataset is None:
        raise ValueError("no annotated images: pass a dataset, or an image_dir with masks or a boxes JSON.")
    if not 1 <= count <= len(dataset):
        raise ValueError(
            f"need {count} annotated images but {len(dataset)} are available; ask for 1 to {len(dataset)} images in "
            "all (selection and held-out images together)."
        )
    chosen = np.random.default_rng(seed).permutation(len(dataset))[:count].tolist()
    if isinstance(dataset, AnnotatedImages):
        annotated = dataset.subset(chosen)
    else:
        annotated = masks_from_dataset(dataset, chosen, image_column=image_column, mask_column=mask_column)
    return annotated.to_model_inputs(settings, patch_size, min_object_fraction)


__all__ = [
    "AnnotatedImages",
    "annotated_model_inputs",
    "masks_from_boxes",
    "masks_from_dataset",
    "masks_from_folder",
    "object_patches",
]
