"""The undecoded JPEGs of a device-decoding batch (``--image_decoding device``) and how examples collate into one.

Plain torch and dataclasses, shared by the input pipeline (`modeling_gpa.data.pipeline.collate_pixel_values`) and
device decoding (`modeling_gpa.data.device_decoding`), which builds the examples and decodes the batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Undecoded JPEGs of a batch, decoded on the training device (modeling_gpa.data.device_decoding).
ENCODED_KEY = "encoded_images"


@dataclass
class EncodedJpeg:
    """One undecoded JPEG and the crop to take from it: ``data`` (N,) uint8 file bytes, ``box`` (top, left, h, w)."""

    data: torch.Tensor
    box: tuple[int, int, int, int]
    flip: bool
    name: str
    image_size: int
    num_channels: int
    strict: bool = False
    orientation: int = 1


@dataclass
class EncodedImages:
    """A batch's undecoded JPEGs (at least one): ``jpegs[i]`` goes to row ``positions[i]`` of the (B, C, S, S) batch.

    Not a tensor and without ``.to``, so accelerate and the DataLoader's pin-memory thread pass it through as it is:
    the bytes stay on the host, where nvJPEG reads them.
    """

    jpegs: list[EncodedJpeg]
    positions: list[int]
    batch_size: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, C, S, S) of the decoded batch."""
        first = self.jpegs[0]
        return (self.batch_size, first.num_channels, first.image_size, first.image_size)


def collate_encoded(examples: list[dict]) -> dict[str, Any]:
    """Examples of `DeviceDecodingImageDataset`, at least one a JPEG -> ``{"encoded_images": EncodedImages}`` plus,
    when some images were decoded in the worker, ``"pixel_values"`` (B, C, S, S) uint8 holding them (zeros where a
    JPEG goes)."""
    positions = [i for i, example in enumerate(examples) if ENCODED_KEY in example]
    encoded = EncodedImages([examples[i][ENCODED_KEY] for i in positions], positions, len(examples))
    batch: dict[str, Any] = {ENCODED_KEY: encoded}
    if len(positions) < len(examples):
        pixels = torch.zeros(encoded.shape, dtype=torch.uint8)
        for i, example in enumerate(examples):
            if ENCODED_KEY not in example:
                pixels[i] = example["pixel_values"]
        batch["pixel_values"] = pixels
    return batch


__all__ = ["ENCODED_KEY", "EncodedImages", "EncodedJpeg", "collate_encoded"]
