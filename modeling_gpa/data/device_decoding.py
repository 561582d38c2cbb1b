"""JPEG decoding on the training device (nvJPEG through torchvision), for hosts with few CPU cores per GPU.

With ``--image_decoding device`` the DataLoader workers no longer decode: [`DeviceDecodingImageDataset`] reads each
file's bytes and its JPEG header (for the size), draws MAE's RandomResizedCrop box and flip there (the same draws, from
the same RNG, as [`TrainCrop`]) and hands the undecoded bytes to the main process. [`collate_pixel_values`] gathers a
batch's JPEGs into one [`EncodedImages`]; the trainer's [`DeviceDecodingMixin`] decodes them in one batched call on the
device, crops, resizes (bicubic, antialiased) and flips there ([`decode_on_device`]), and normalises the resulting
uint8 (B, C, S, S) batch as usual. Images nvJPEG should not get (PNG, CMYK or other-mode JPEGs) are decoded and
cropped in the worker as before and travel in ``pixel_values``; the decoded JPEGs take their places beside them.

Rotated photos (an EXIF orientation other than 1) are turned upright on the device: the worker reads the tag with the
header and draws the crop on the upright size, and [`crop_resize`] transposes the decoded pixels
([`exif_transpose_tensor`], a flip, transpose or rotation of the uint8 tensor) before cropping, so both decoding
paths give the image `datasets` and PIL's ``ImageOps.exif_transpose`` give.

A JPEG whose header reads but whose data the device decoder refuses is found on the device: the batch is then decoded
image by image, a refused JPEG by PIL on the host (a variant nvJPEG does not handle still trains); one PIL cannot read
either is named in a warning and the next readable image of the batch takes its place (counted like a worker skip),
or with ``strict`` [`UnreadableImageError`] names it.

torchvision is imported only when the decoder is asked for ([`nvjpeg_decoder`]): the CPU set-up does not have it, and
everything else here is plain torch and PIL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .encoded_images import ENCODED_KEY, EncodedImages, EncodedJpeg
from .pipeline import (
    JpegHeader,
    JpegImageDataset,
    TrainCrop,
    UnreadableImageError,
    decode_image,
    exif_transpose_tensor,
    random_resized_crop_box,
    to_num_channels,
    to_uint8_tensor,
)

logger = logging.getLogger(__name__)

# (list of 1-D uint8 tensors of file bytes, num_channels, device) -> list of (C, H, W) uint8 tensors on the device.
JpegDecoder = Callable[[list[torch.Tensor], int, torch.device], list[torch.Tensor]]


class DeviceDecodingUnavailable(ValueError):
    """``--image_decoding device`` on a machine without torchvision's CUDA JPEG decoder; the message says what to do."""


class DeviceDecodingImageDataset(JpegImageDataset):
    """[`JpegImageDataset`] for pretraining with device decoding: JPEGs leave the worker undecoded, crop drawn.

    Rows are ``{"encoded_images": EncodedJpeg}`` for a JPEG in the crop's colour mode (baseline RGB for 3 channels,
    grayscale for 1) and ``{"pixel_values": (C, S, S) uint8}`` (decoded and cropped here by ``crop``) for anything
    else. Only the header is parsed in the worker, so a JPEG whose data is damaged is caught on the device.
    """

    def __init__(self, source, crop: TrainCrop, image_column: str | None = None, strict: bool = False) -> None:
        if not isinstance(crop, TrainCrop):
            raise ValueError("device decoding takes the pretraining crop (TrainCrop): evaluation decodes on the CPU")
        super().__init__(source, crop, image_column, strict=strict)

    def jpeg_example(self, data: bytes, header: JpegHeader, name: str) -> dict[str, Any]:
        top, left, h, w = random_resized_crop_box(header.width, header.height, self.crop.scale, self.crop.ratio)
        flip = torch.rand(1).item() < 0.5
        pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        jpeg = EncodedJpeg(
            pixels,
            (top, left, h, w),
            flip,
            name,
            self.crop.image_size,
            self.crop.num_channels,
            self.strict,
            header.orientation,
        )
        return {ENCODED_KEY: jpeg}


def crop_resize(images: list[torch.Tensor], jpegs: list[EncodedJpeg], image_size: int) -> torch.Tensor:
    """Decoded (C, H_i, W_i) uint8 images and their crops -> (k, C, S, S) uint8: upright (EXIF), box, bicubic
    antialiased resize, flip.

    One resize per image: decoded images differ in size, so they cannot share one tensor before the crop; on a GPU
    these launches are asynchronous and the host only queues them.
    """
    crops = []
    for image, jpeg in zip(images, jpegs, strict=True):
        image = exif_transpose_tensor(image, jpeg.orientation)
        top, left, h, w = jpeg.box
        crop = image[None, :, top : top + h, left : left + w].float()
        crop = torch.nn.functional.interpolate(crop, size=(image_size, image_size), mode="bicubic", antialias=True)
        crops.append(crop.flip(-1) if jpeg.flip else crop)
    return torch.cat(crops).round_().clamp_(0, 255).to(torch.uint8)


def decode_on_device(
    encoded: EncodedImages, pixel_values: torch.Tensor | None, device: torch.device, decoder: JpegDecoder
) -> tuple[torch.Tensor, list[str]]:
    """The batch's (B, C, S, S) uint8 pixels on ``device``, and the names of the JPEGs that could not be decoded.

    ``pixel_values`` (B, C, S, S) uint8 on ``device`` holds the images decoded in the workers, or is None when every
    image is a JPEG. An undecodable JPEG is replaced by the next decodable one of the batch (or raises
    [`UnreadableImageError`] naming it when the dataset was strict).
    """
    pixels = torch.empty(encoded.shape, dtype=torch.uint8, device=device) if pixel_values is None else pixel_values
    _, num_channels, image_size, _ = encoded.shape
    jpegs = encoded.jpegs
    try:
        images = decoder([jpeg.data for jpeg in jpegs], num_channels, device)
        failed = []
    except Exception:  # one bad file fails the batched call: decode one by one to name it
        images, jpegs, failed = _decode_each(jpegs, num_channels, device, decoder)
    crops = crop_resize(images, jpegs, image_size)
    index = torch.tensor(encoded.positions, device=device)
    return pixels.index_copy_(0, index, crops), failed


def _decode_each(
    jpegs: list[EncodedJpeg], num_channels: int, device: torch.device, decoder: JpegDecoder
) -> tuple[list[torch.Tensor], list[EncodedJpeg], list[str]]:
    """Decodes JPEGs one at a time, with PIL on the host where the device decoder refuses one (a JPEG variant it does
    not handle); a JPEG PIL cannot read either is replaced by the next decodable one (its image and crop)."""
    decoded: list[tuple[torch.Tensor, EncodedJpeg] | None] = []
    for jpeg in jpegs:
        try:
            decoded.append((decoder([jpeg.data], num_channels, device)[0], jpeg))
            continue
        except Exception:  # the decoder's own error types differ by backend; PIL below says what is wrong
            pass
        try:
            decoded.append((_decode_on_host(jpeg, num_channels).to(device), jpeg))
        except UnreadableImageError as error:
            if jpeg.strict:
                raise UnreadableImageError(f"{error}: remove it, or drop --strict_images to skip it") from None
            logger.warning(f"Skipping {error}; the next image takes its place.")
            decoded.append(None)
    readable = [i for i, item in enumerate(decoded) if item is not None]
    if not readable:
        raise UnreadableImageError(f"no JPEG of a batch of {len(jpegs)} decodes: check the image files")
    filled = [decoded[i] or decoded[next((j for j in readable if j > i), readable[0])] for i in range(len(jpegs))]
    images, kept = zip(*filled, strict=True)
    return list(images), list(kept), [jpeg.name for jpeg, item in zip(jpegs, decoded, strict=True) if item is None]


def _decode_on_host(jpeg: EncodedJpeg, num_channels: int) -> torch.Tensor:
    """(C, H, W) uint8 of ``jpeg`` decoded by PIL, as stored (``crop_resize`` turns it upright, as the device decoder's
    images); raises [`UnreadableImageError`] naming the file."""
    image = decode_image({"bytes": jpeg.data.numpy().tobytes(), "path": jpeg.name}, transpose=False)
    return to_uint8_tensor(to_num_channels(image, num_channels))


def nvjpeg_decoder(device: torch.device) -> JpegDecoder:
    """torchvision's batched ``decode_jpeg`` on ``device`` (nvJPEG); raises [`DeviceDecodingUnavailable`] when that
    cannot run here (torchvision missing or built for another torch, or a device that is not CUDA)."""
    if device.type != "cuda":
        raise DeviceDecodingUnavailable(
            f"--image_decoding device decodes JPEGs with nvJPEG on a CUDA GPU, but training runs on {device.type}: "
            "use --image_decoding cpu"
        )
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as error:  # absent, or its C extension does not load beside this torch build
        raise DeviceDecodingUnavailable(
            f"--image_decoding device needs torchvision built for this torch ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}): install it, or use --image_decoding cpu"
        ) from None
    modes = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}

    def decode(datas: list[torch.Tensor], num_channels: int, target: torch.device) -> list[torch.Tensor]:
        return decode_jpeg(datas, mode=modes[num_channels], device=target)

    return decode


__all__ = [
    "DeviceDecodingImageDataset",
    "DeviceDecodingUnavailable",
    "crop_resize",
    "decode_on_device",
    "nvjpeg_decoder",
]
