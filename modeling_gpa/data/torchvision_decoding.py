"""JPEG decoding and cropping by torchvision in the DataLoader workers: run_pretrain.py's ``--image_decoding cpu``.

[`TorchvisionImageDataset`] is the pretraining [`ImageDataset`] with a faster worker for JPEGs: torchvision's
``decode_jpeg`` (libjpeg-turbo, as PIL, so the decoded pixels are PIL's) and its uint8 bicubic antialiased
``resized_crop`` do MAE's RandomResizedCrop + flip on the (C, H, W) tensor, where PIL's ``Image.resize`` costs about
2.5x as much (`benchmarks/pipeline_cpu.md` has the per-worker figures). The crop box and the flip are drawn as
[`TrainCrop`] draws them, from the same RNG in the same order, so a seed gives the same crops on both paths and the
pixels differ only by the resize's rounding (mean absolute difference about 0.02 of 255).

Only JPEGs that decode straight to the crop's channels go this way (baseline RGB for 3 channels, grayscale for 1,
within PIL's decompression-bomb limit; [`jpeg_header`] reads the header and EXIF orientation, and the decoded
tensor is turned upright as PIL's ``ImageOps.exif_transpose`` turns it). Everything else is decoded by PIL as in
[`ImageDataset`]: PNG, PGM (Fashion-MNIST), 16-bit and palette images, CMYK JPEGs, huge images (with their warning),
and any JPEG torchvision refuses, so that PIL names an unreadable file in the same one-line error.

torchvision is imported only when the dataset is built ([`torchvision_decoding_available`] says whether it can be):
a torch without a matching torchvision trains on the PIL pipeline instead.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import torch

from .pipeline import JpegHeader, JpegImageDataset, TrainCrop, exif_transpose_tensor, random_resized_crop_box


class TorchvisionUnavailable(ImportError):
    """torchvision does not import beside this torch; the message says what to do."""


def torchvision_decoding_available() -> bool:
    """Whether torchvision imports here with its JPEG decoder and v2 transforms."""
    try:
        _torchvision_functions()
    except TorchvisionUnavailable:
        return False
    return True


@functools.cache
def _torchvision_functions():
    """torchvision's ``decode_jpeg``, ``ImageReadMode``, v2 ``resized_crop`` and ``InterpolationMode``."""
    try:
        io = importlib.import_module("torchvision.io")
        functional = importlib.import_module("torchvision.transforms.v2.functional")
        transforms = importlib.import_module("torchvision.transforms")
    except Exception as error:  # ImportError, or RuntimeError/OSError of a torchvision built for another torch
        reason = str(error).splitlines()[0] if str(error) else ""
        raise TorchvisionUnavailable(
            f"torchvision does not import ({type(error).__name__}: {reason}): install the torchvision built for "
            "this torch (scripts/setup.sh pins the pair), or use --image_decoding pil"
        ) from None
    return io.decode_jpeg, io.ImageReadMode, functional.resized_crop, transforms.InterpolationMode


class TorchvisionImageDataset(JpegImageDataset):
    """[`JpegImageDataset`] for pretraining whose JPEGs are decoded and cropped by torchvision; rows as
    [`ImageDataset`]'s: ``{"pixel_values": (C, S, S) uint8}`` (plus ``"labels"``); a JPEG torchvision refuses is
    left to PIL, which names it when it is unreadable.

    Raises [`TorchvisionUnavailable`] at construction where torchvision does not import.
    """

    def __init__(
        self,
        source,
        crop: TrainCrop,
        image_column: str | None = None,
        label_column: str | None = None,
        strict: bool = False,
    ) -> None:
        if not isinstance(crop, TrainCrop):
            raise ValueError("torchvision decoding takes the pretraining crop (TrainCrop): evaluation decodes with PIL")
        _torchvision_functions()
        super().__init__(source, crop, image_column, label_column, strict=strict)

    def jpeg_example(self, data: bytes, header: JpegHeader, name: str) -> dict[str, Any] | None:
        pixels = self._decoded_jpeg(data, header.orientation)
        return None if pixels is None else {"pixel_values": self._cropped(pixels)}

    def _decoded_jpeg(self, data: bytes, orientation: int) -> torch.Tensor | None:
        """(C, H, W) uint8 of the JPEG ``data``, upright; None when torchvision refuses it (PIL then decides)."""
        decode_jpeg, read_mode, _, _ = _torchvision_functions()
        mode = read_mode.GRAY if self.crop.num_channels == 1 else read_mode.RGB
        try:
            pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
        except RuntimeError:
            return None
        return exif_transpose_tensor(pixels, orientation)

    def _cropped(self, pixels: torch.Tensor) -> torch.Tensor:
        """(C, H, W) uint8 -> MAE's RandomResizedCrop (bicubic, antialiased) + flip, (C, S, S) uint8."""
        _, _, resized_crop, interpolation = _torchvision_functions()
        _, height, width = pixels.shape
        top, left, h, w = random_resized_crop_box(width, height, self.crop.scale, self.crop.ratio)
        size = [self.crop.image_size, self.crop.image_size]
        crop = resized_crop(pixels, top, left, h, w, size, interpolation=interpolation.BICUBIC, antialias=True)
        return crop.flip(-1) if torch.rand(1).item() < 0.5 else crop


__all__ = ["TorchvisionImageDataset", "TorchvisionUnavailable", "torchvision_decoding_available"]
