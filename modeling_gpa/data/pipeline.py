"""The input pipeline: images in, uint8 (B, C, H, W) batches out, normalised on the device in one place.

DataLoader workers decode each image with PIL and crop it (MAE's RandomResizedCrop + horizontal flip for
pretraining, MAE's resize + center crop for evaluation) straight into a uint8 (C, H, W) tensor: no float work in the
workers and 4x fewer bytes through shared memory and over PCIe than float32 (pretraining JPEGs go through torchvision
instead by default, with the same crops: `modeling_gpa.data.torchvision_decoding`). The main process hands the uint8
batch to the device, where [`PixelNormalizer`] turns it into float32 ``(x / 255 - mean) / std`` with the image
processor's mean and std; [`GPATrainer`], the fine-tuning trainer and the evaluation scripts all call it. Float
``pixel_values`` pass through unchanged, so a model called directly on normalised floats behaves as before.

Unreadable images are found where they are decoded, never in a pass over the dataset: [`ImageDataset`] logs a
warning naming the file, takes the next readable image in its place (batches keep their size, so shapes stay fixed
for ``torch.compile``) and lists the file's name in the batch (``unreadable_images``), or with ``strict=True`` raises
[`UnreadableImageError`] naming the file. Names, not counts, travel with the batches: a bad file is met again by the
index before it, in every epoch and by every worker, and the trainer counts each file once.

No torchvision and no `datasets` import here: the randomness comes from torch's global RNG, which torch seeds per
DataLoader worker, so runs are reproducible and a resumed run draws what the uninterrupted one would.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torch.utils.data import Dataset, default_collate

from .encoded_images import ENCODED_KEY, collate_encoded

logger = logging.getLogger(__name__)

# ImageNet's per-channel mean and std, in [0, 1]: the default normalisation of a 3-channel model.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNREADABLE_KEY = "unreadable_images"
# An image that fails to decode is replaced by the next one; this many failures in a row mean the data is broken.
MAX_UNREADABLE_IN_A_ROW = 100
EXIF_ORIENTATION = ExifTags.Base.Orientation
JPEG_MAGIC = b"\xff\xd8\xff"
# The PIL mode an image of this many channels is decoded to.
PIL_MODES = {1: "L", 3: "RGB"}
# Files above PIL's decompression-bomb limit already named in a warning by this process.
_LARGE_IMAGES_WARNED: set[str] = set()


class UnreadableImageError(ValueError):
    """An image that PIL cannot decode; the message names the file and fits on one line."""


# ----------------------------------------------------------------------------------------------------------------------
# Decoding and channels
# ----------------------------------------------------------------------------------------------------------------------


def image_name(value: Any, index: int | None = None) -> str:
    """A human-readable name of an image value: its path, else "example {index}"."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return f"example {index}" if index is not None else "an in-memory image"


def image_bytes(value: Any, index: int | None = None) -> bytes:
    """The encoded bytes of a file path or a `datasets.Image` value ``{"bytes", "path"}``.

    Raises [`UnreadableImageError`] (one line, naming the file) when the value holds no image or its file cannot be
    read.
    """
    if isinstance(value, dict) and value.get("bytes") is not None:
        return value["bytes"]
    path = value if isinstance(value, str) else value.get("path") if isinstance(value, dict) else None
    if not path:
        raise UnreadableImageError(f"unreadable image {image_name(value, index)} (ValueError: missing image)")
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImageError(f"unreadable image {path} ({type(error).__name__}: {error.strerror})") from None


def decode_image(value: Any, index: int | None = None, transpose: bool = True) -> Image.Image:
    """A loaded PIL image from a file path, a PIL image, or a `datasets.Image` value ``{"bytes", "path"}``.

    The image is turned upright by its EXIF orientation (as `datasets`' own decoder does: phone photos store their
    pixels sideways and say so in the tag) unless ``transpose`` is False. An image above PIL's decompression-bomb
    limit (``Image.MAX_IMAGE_PIXELS``, 89 megapixels) is decoded with a warning naming it, once per process, instead
    of PIL's unnamed one; twice the limit is refused. Raises [`UnreadableImageError`] (one line, naming the file)
    when the image is missing or cannot be decoded.
    """
    if isinstance(value, Image.Image):
        return value
    data = image_bytes(value, index)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if Image.MAX_IMAGE_PIXELS and image.width * image.height > Image.MAX_IMAGE_PIXELS:
            warn_large_image(image_name(value, index), image.size)
        image.load()
        if transpose:
            image = exif_transposed(image)
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad files
        reason = str(error).splitlines()[0] if str(error) else ""
        raise UnreadableImageError(
            f"unreadable image {image_name(value, index)} ({type(error).__name__}: {reason})"
        ) from None
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an opened image: 1 (upright, also when absent) to 8."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    return orientation if orientation in range(1, 9) else 1


def exif_transposed(image: Image.Image) -> Image.Image:
    """``image`` turned upright by its EXIF orientation (the image itself when it is upright already)."""
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


def exif_transpose_tensor(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (C, H, W) image as stored -> upright by its EXIF ``orientation`` (1-8), as PIL's ``ImageOps.exif_transpose``;
    orientations 5-8 give (C, W, H)."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.rot90(-1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.rot90(1, (-2, -1))
    return image


@dataclass(frozen=True)
class JpegHeader:
    """What a JPEG's header says before its data is decoded: the upright size and the EXIF orientation (1-8)."""

    width: int
    height: int
    orientation: int


def jpeg_header(data: bytes, num_channels: int) -> JpegHeader | None:
    """The header of ``data`` when it is a JPEG that decodes straight to ``num_channels`` (baseline RGB for 3,
    grayscale for 1) within PIL's decompression-bomb limit; None for anything else (other formats, CMYK, huge or
    unparseable files), which PIL decodes, converts, warns about or names as unreadable ([`decode_image`]).

    Only the header is parsed (PIL's lazy open, about 30 us); other formats are told apart by their first bytes.
    """
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))
    except Exception:  # PIL raises many types for a file that is not an image; decode_image names it later
        return None
    if header.format != "JPEG" or header.mode != PIL_MODES.get(num_channels):
        return None
    if Image.MAX_IMAGE_PIXELS and header.width * header.height > Image.MAX_IMAGE_PIXELS:
        return None
    orientation = exif_orientation(header)
    # Orientations 5-8 turn the image a quarter: the upright image is the stored one's height wide.
    if orientation >= 5:
        return JpegHeader(header.height, header.width, orientation)
    return JpegHeader(header.width, header.height, orientation)


def warn_large_image(name: str, size: tuple[int, int]) -> None:
    """One warning per process and file for an image above PIL's decompression-bomb limit."""
    if name in _LARGE_IMAGES_WARNED:
        return
    _LARGE_IMAGES_WARNED.add(name)
    width, height = size
    logger.warning(
        f"Image {name} is {width}x{height} ({width * height / 1e6:.0f} megapixels, above PIL's "
        f"{Image.MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit): decoding it in full takes "
        f"{width * height * 3 / 2**20:.0f} MiB and is slow; downscale it once, e.g. to a 1024-pixel side."
    )


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


def to_uint8_tensor(image: Image.Image, flip: bool = False) -> torch.Tensor:
    """An "L" or "RGB" PIL image -> (C, H, W) uint8 tensor (a view of one copy of the pixels), mirrored if `flip`."""
    pixels = torch.from_numpy(np.array(image))
    pixels = pixels.unsqueeze(-1) if pixels.ndim == 2 else pixels
    if flip:
        pixels = pixels.flip(1)
    return pixels.permute(2, 0, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------------------------------


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


def one_draw_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """MAE's linear-probe RandomResizedCrop box (``util/crop.py``, after BYOL's TF code): one draw of area and aspect,
    the box clamped to the image, at a random place; (top, left, height, width). torchvision's instead tries 10 draws
    that fit and else takes the central crop, so its boxes are larger and rarely span the whole width or height."""
    target_area = height * width * torch.empty(1).uniform_(scale[0], scale[1]).item()
    log_ratio = torch.log(torch.tensor(ratio))
    aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
    # At least one pixel: MAE's crop of a few-pixel image would be empty.
    w = max(1, min(int(round(math.sqrt(target_area * aspect))), width))
    h = max(1, min(int(round(math.sqrt(target_area / aspect))), height))
    top = int(torch.randint(0, height - h + 1, size=(1,)).item())
    left = int(torch.randint(0, width - w + 1, size=(1,)).item())
    return top, left, h, w


def _check_crop(image_size: int, num_channels: int) -> None:
    if image_size < 1:
        raise ValueError(f"image_size={image_size} must be positive")
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels={num_channels} is not supported: use 1 (grayscale) or 3 (RGB)")


@dataclass
class TrainCrop:
    """MAE's pretraining augmentation: RandomResizedCrop(scale, ratio, bicubic) + horizontal flip (p = 0.5).

    PIL image of any mode and size -> (num_channels, image_size, image_size) uint8. The crop and the resize are one
    `Image.resize(box=...)` call; the flip mirrors the uint8 tensor. ``one_draw`` takes MAE's linear-probe box
    ([`one_draw_crop_box`]) instead of torchvision's ([`random_resized_crop_box`]).
    """

    image_size: int
    num_channels: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    one_draw: bool = False

    def __post_init__(self) -> None:
        _check_crop(self.image_size, self.num_channels)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_num_channels(image, self.num_channels)
        box = one_draw_crop_box if self.one_draw else random_resized_crop_box
        top, left, h, w = box(image.width, image.height, self.scale, self.ratio)
        size = (self.image_size, self.image_size)
        image = image.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        return to_uint8_tensor(image, flip=torch.rand(1).item() < 0.5)


@dataclass
class EvalCrop:
    """MAE's evaluation view at every image size: the shorter side resized to ``int(image_size / crop_pct)`` (bicubic,
    the longer side scaled and truncated as torchvision's ``Resize``), then the central ``image_size`` square (placed
    as torchvision's ``CenterCrop``); uint8 out. 224 px: Resize(256), CenterCrop(224) (``main_linprobe.py``); 28 px:
    Resize(32), CenterCrop(28).
    """

    image_size: int
    num_channels: int
    crop_pct: float = 224 / 256

    def __post_init__(self) -> None:
        _check_crop(self.image_size, self.num_channels)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_num_channels(image, self.num_channels)
        short = int(self.image_size / self.crop_pct)
        width, height = image.size
        if width <= height:
            new_size = (short, int(short * height / width))
        else:
            new_size = (int(short * width / height), short)
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BICUBIC)
        left = int(round((image.width - self.image_size) / 2.0))
        top = int(round((image.height - self.image_size) / 2.0))
        return to_uint8_tensor(image.crop((left, top, left + self.image_size, top + self.image_size)))


# ----------------------------------------------------------------------------------------------------------------------
# Dataset and collators
# ----------------------------------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Rows ``{"pixel_values": (C, H, W) uint8}`` (plus ``"labels"``) of an image source, decoded where they are read.

    Args:
        source: a `datasets.Dataset` with an image column, or a sequence of image file paths.
        crop: PIL image -> (C, H, W) uint8 tensor ([`TrainCrop`] or [`EvalCrop`]).
        image_column: the image column of a `datasets.Dataset` source.
        label_column: a column copied to ``"labels"``.
        strict: raise [`UnreadableImageError`] at the first unreadable image instead of replacing it.

    A `datasets.Dataset` is read with its image column undecoded (the file's bytes or path), so PIL decodes each image
    once, in the worker, and a bad file is caught there. An unreadable image is replaced by the next readable one in
    the source; the row then carries ``"unreadable_images"``: the names of the images it replaced. A process remembers
    the indices it found unreadable and passes over them without decoding (or warning) again.
    """

    def __init__(
        self,
        source,
        crop: Callable[[Image.Image], torch.Tensor],
        image_column: str | None = None,
        label_column: str | None = None,
        strict: bool = False,
    ) -> None:
        self.crop, self.image_column, self.label_column, self.strict = crop, image_column, label_column, strict
        if isinstance(source, Sequence) and not hasattr(source, "column_names"):
            if label_column is not None:
                raise ValueError("a list of image files has no label column: pass a datasets.Dataset with labels")
            self.source = list(source)
            return
        columns = [image_column] + ([label_column] if label_column is not None else [])
        missing = [c for c in columns if c not in source.column_names]
        if missing:
            raise ValueError(f"column {missing[0]!r} not in dataset: available columns are {source.column_names}")
        source = source.select_columns(columns)
        feature = source.features[image_column]
        if getattr(feature, "decode", False):
            source = source.cast_column(image_column, type(feature)(decode=False))
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def _example(self, index: int) -> dict[str, Any]:
        """The row at `index` as an example ([`example_of_row`])."""
        return self.example_of_row(self.source[index], index)

    def example_of_row(self, row: Any, index: int | None = None) -> dict[str, Any]:
        """A source row (a file path, or a dict with the image and label columns) -> its image decoded and cropped,
        and its label. ``index`` names the row in errors. Raises [`UnreadableImageError`]."""
        if self.image_column is None:
            return {"pixel_values": self.crop(decode_image(row, index))}
        example = {"pixel_values": self.crop(decode_image(row[self.image_column], index))}
        if self.label_column is not None:
            example["labels"] = row[self.label_column]
        return example

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        unreadable = []
        known_bad = self.__dict__.setdefault("_unreadable_names", {})
        for offset in range(min(len(self), MAX_UNREADABLE_IN_A_ROW)):
            position = (index + offset) % len(self)
            if position in known_bad:
                unreadable.append(known_bad[position])
                continue
            try:
                example = self._example(position)
            except UnreadableImageError as error:
                if self.strict:
                    raise UnreadableImageError(f"{error}: remove it, or drop --strict_images to skip it") from None
                logger.warning(f"Skipping {error}; the next image takes its place.")
                known_bad[position] = self.image_name_at(position)
                unreadable.append(known_bad[position])
                continue
            if unreadable:
                example[UNREADABLE_KEY] = unreadable
            return example
        raise UnreadableImageError(
            f"{len(unreadable)} unreadable images in a row from index {index}: check the image files or the dataset"
        )

    def image_name_at(self, index: int) -> str:
        """The name unreadable-image counts know the image at ``index`` by: its path, else "example {index}"."""
        row = self.source[index]
        return image_name(row if self.image_column is None else row[self.image_column], index)


class JpegImageDataset(ImageDataset):
    """[`ImageDataset`] that hands the JPEGs decoding straight to the crop's channels ([`jpeg_header`]) to
    [`jpeg_example`] and crops everything else with PIL as [`ImageDataset`] does: the base of the torchvision and the
    device decoding paths. Rows carry ``"labels"`` as [`ImageDataset`]'s do."""

    def example_of_row(self, row: Any, index: int | None = None) -> dict[str, Any]:
        value = row if self.image_column is None else row[self.image_column]
        example = self.image_example(value, index)
        if self.label_column is not None:
            example["labels"] = row[self.label_column]
        return example

    def image_example(self, value: Any, index: int | None = None) -> dict[str, Any]:
        """An image value (path, ``{"bytes", "path"}`` or PIL image) -> its example: [`jpeg_example`]'s for a JPEG
        it takes, else ``{"pixel_values": (C, S, S) uint8}`` cropped by PIL. Raises [`UnreadableImageError`]."""
        if isinstance(value, Image.Image):
            return {"pixel_values": self.crop(value)}
        name, data = image_name(value, index), image_bytes(value, index)
        header = jpeg_header(data, self.crop.num_channels)
        example = self.jpeg_example(data, header, name) if header is not None else None
        if example is None:
            return {"pixel_values": self.crop(decode_image({"bytes": data, "path": name}))}
        return example

    def jpeg_example(self, data: bytes, header: JpegHeader, name: str) -> dict[str, Any] | None:
        """The example of the JPEG ``data`` (named ``name`` in errors), or None to leave it to PIL."""
        raise NotImplementedError


def collate_pixel_values(examples: list[dict]) -> dict[str, Any]:
    """Stack examples into ``{"pixel_values": (B, C, H, W)}`` (the examples' dtype, uint8 from [`ImageDataset`]).

    In a DataLoader worker the batch is stacked straight into shared memory (as torch's `default_collate` does).
    When some images were unreadable, ``"unreadable_images"`` lists their names (pop it before calling a model).
    Examples holding undecoded JPEGs (device decoding) are gathered by
    `modeling_gpa.data.encoded_images.collate_encoded` instead.
    """
    if any(ENCODED_KEY in example for example in examples):
        batch = collate_encoded(examples)
    else:
        batch = {"pixel_values": default_collate([example["pixel_values"] for example in examples])}
    unreadable = [name for example in examples for name in example.get(UNREADABLE_KEY, ())]
    if unreadable:
        batch[UNREADABLE_KEY] = unreadable
    return batch


def collate_pixel_values_and_labels(examples: list[dict]) -> dict[str, Any]:
    """[`collate_pixel_values`] plus ``"labels"``: (B,) int64."""
    batch = collate_pixel_values(examples)
    batch["labels"] = torch.tensor([int(example["labels"]) for example in examples], dtype=torch.long)
    return batch


# ----------------------------------------------------------------------------------------------------------------------
# Normalisation on the device
# ----------------------------------------------------------------------------------------------------------------------


class PixelNormalizer:
    """uint8 (B, C, H, W) pixels -> float32 ``(x / 255 - mean) / std``, on the pixels' device; floats pass through.

    The one place where the pipeline's uint8 batches become model inputs. The per-channel constants are kept on each
    device they are used on, so normalising makes no host-to-device copy and no synchronisation.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean64 = torch.tensor([float(m) for m in mean], dtype=torch.float64)
        std64 = torch.tensor([float(s) for s in std], dtype=torch.float64)
        if mean64.numel() != std64.numel() or mean64.numel() == 0 or bool((std64 <= 0).any()):
            raise ValueError(f"mean {list(mean)} and std {list(std)} need one value per channel and std > 0")
        self.mean, self.std = tuple(mean64.tolist()), tuple(std64.tolist())
        self._scale = (1.0 / (255.0 * std64)).float().view(-1, 1, 1)
        self._shift = (mean64 / std64).float().view(-1, 1, 1)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dtype != torch.uint8:
            return pixel_values
        if pixel_values.shape[-3] != self._scale.shape[0]:
            raise ValueError(
                f"pixel_values have {pixel_values.shape[-3]} channels but mean/std {len(self.mean)}: build the "
                "normaliser from the model's image processor"
            )
        device = pixel_values.device
        if device not in self._on_device:
            self._on_device[device] = (self._scale.to(device), self._shift.to(device))
        scale, shift = self._on_device[device]
        return (pixel_values.float() * scale).sub_(shift)

    def __repr__(self) -> str:
        return f"PixelNormalizer(mean={self.mean}, std={self.std})"


__all__ = [
    "EvalCrop",
    "ImageDataset",
    "JpegHeader",
    "JpegImageDataset",
    "PixelNormalizer",
    "TrainCrop",
    "UnreadableImageError",
    "collate_pixel_values",
    "collate_pixel_values_and_labels",
    "decode_image",
    "exif_orientation",
    "exif_transpose_tensor",
    "exif_transposed",
    "image_bytes",
    "jpeg_header",
    "one_draw_crop_box",
    "random_resized_crop_box",
    "to_num_channels",
    "to_uint8_tensor",
]
