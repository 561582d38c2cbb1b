"""Deterministic model inputs from PIL images, and back to displayable pixels.

Attention selection and the visualisations need images resized exactly to the model's grid (so a ground-truth mask
resized the same way stays aligned with the patches) and normalised the way the checkpoint was trained: no random
crops, no flips. The normalisation comes from the checkpoint's ``preprocessor_config.json`` when it has one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..configuration_gpa import pair
from .fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD, fashion_mnist_arrays
from .pipeline import IMAGENET_MEAN, IMAGENET_STD, PixelNormalizer, to_num_channels, to_uint8_tensor


def default_mean_std(num_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``data.sources.build_image_processor``'s defaults: Fashion-MNIST's statistics for 1 channel, ImageNet's for 3."""
    return (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if num_channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)


def _per_channel(name: str, values: float | Sequence[float], num_channels: int) -> tuple[float, ...]:
    """One value per channel; a 3-value RGB statistic becomes its average for a single-channel model."""
    values = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(values) == num_channels:
        return tuple(values)
    if len(values) == 1:
        return tuple(values * num_channels)
    if len(values) == 3 and num_channels == 1:
        # A grey image is the mean of its RGB channels, so its statistic is (about) the mean of theirs.
        return (sum(values) / 3,)
    raise ValueError(
        f"{name} has {len(values)} values but the model has {num_channels} channels; "
        f"give 1 or {num_channels} values (fix image_{name.split('_')[-1]} in preprocessor_config.json)."
    )


SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@dataclass(frozen=True)
class ImageSettings:
    """How images become ``pixel_values`` for one model: size (H, W), channels and per-channel mean/std."""

    image_size: tuple[int, int]
    num_channels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    @classmethod
    def for_config(
        cls,
        config,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
    ) -> ImageSettings:
        """Size and channels from a ViT / ViTMAE / GPA ``config``; mean and std as given, else ``default_mean_std``."""
        channels = int(config.num_channels)
        default_mean, default_std = default_mean_std(channels)
        image_mean = default_mean if image_mean is None else image_mean
        image_std = default_std if image_std is None else image_std
        return cls(
            image_size=pair(config.image_size),
            num_channels=channels,
            image_mean=_per_channel("image_mean", image_mean, channels),
            image_std=_per_channel("image_std", image_std, channels),
        )

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, config) -> ImageSettings:
        """The checkpoint's own normalisation when its directory has ``preprocessor_config.json``, else the defaults.

        The size always comes from ``config``: the model's patch grid is fixed, whatever the processor resized to.
        The JSON is read directly (no processor class is built), so this works offline and without torchvision.
        """
        processor_file = os.path.join(model_name_or_path, "preprocessor_config.json")
        if not os.path.isfile(processor_file):
            return cls.for_config(config)
        with open(processor_file, encoding="utf-8") as handle:
            processor = json.load(handle)
        return cls.for_config(
            config,
            image_mean=processor.get("image_mean"),
            image_std=processor.get("image_std"),
        )

    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(1, -1, 1, 1)
        return mean, std

    def normalizer(self) -> PixelNormalizer:
        """The pipeline's uint8 -> normalised float32 step with these mean and std."""
        return PixelNormalizer(self.image_mean, self.image_std)

    def to_uint8(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images of any size and mode -> (B, C, H, W) uint8, the whole image resized (bicubic) to the model's size.

        Never cropped: masks resized the same way stay aligned, and nothing of the object is cut away.
        """
        height, width = self.image_size
        resized = [
            to_uint8_tensor(to_num_channels(image, self.num_channels).resize((width, height), Image.Resampling.BICUBIC))
            for image in images
        ]
        return torch.stack(resized)

    def to_pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images of any size and mode -> (B, C, H, W) float32: [`to_uint8`], then normalised."""
        return self.normalizer()(self.to_uint8(images))

    def to_display(self, pixel_values: torch.Tensor) -> np.ndarray:
        """(B, C, H, W) normalised -> (B, H, W, C) float in [0, 1], de-normalised for plotting."""
        mean, std = self._mean_std()
        pixels = pixel_values.detach().float().cpu() * std + mean
        return pixels.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def resize_masks(masks: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """(H_i, W_i) bool masks of any sizes -> (B, H, W) bool at ``size``.

    Area-weighted (box filter): a resized pixel is object when at least half of the area it covers was object, so a
    thin object neither vanishes nor grows when the image is shrunk to the model's size.
    """
    height, width = size
    resized = [
        np.asarray(
            Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).resize(
                (width, height), Image.Resampling.BOX
            )
        )
        >= 128
        for mask in masks
    ]
    return torch.from_numpy(np.stack(resized))


def example_images(skimage_names: Sequence[str], num_fashion_mnist: int) -> list[tuple[str, Image.Image]]:
    """scikit-image's bundled photos and the first Fashion-MNIST test images, as (name, image) pairs.

    Fashion-MNIST is left out, with a note, when its files are missing.
    """
    # scikit-image loads in seconds: only the callers that want its photos pay for it.
    import skimage.data

    images = []
    for name in skimage_names:
        if name not in skimage.data.__all__:
            photos = ", ".join(SKIMAGE_PHOTOS)
            raise ValueError(f"--skimage_images: {name!r} is not a scikit-image image; try {photos}.")
        images.append((name, Image.fromarray(getattr(skimage.data, name)())))
    if num_fashion_mnist > 0:
        try:
            pixels, labels = fashion_mnist_arrays("test")
        except FileNotFoundError as error:
            print(f"note: skipping Fashion-MNIST samples ({error})")
        else:
            for index in range(min(num_fashion_mnist, len(pixels))):
                label = FASHION_MNIST_CLASSES[int(labels[index])]
                images.append((f"fashion_mnist_{index}_{label}", Image.fromarray(pixels[index])))
    return images


__all__ = ["SKIMAGE_PHOTOS", "ImageSettings", "example_images", "resize_masks"]
