"""Fashion-MNIST as numpy arrays, read from the gzip IDX files of Debian's `dataset-fashion-mnist` package.

Needs only numpy: benchmarks that run on machines without `datasets` read the data through this module.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = os.environ.get("GPA_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
# The training split's pixel mean and std, in [0, 1]: the default normalisation of a 1-channel model.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzip) IDX file of unsigned bytes: images come back (N, H, W) uint8, labels (N,) uint8."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_paths(split: str, data_dir: str | None = None) -> list[Path]:
    """The image and label files of a split, with a one-line error saying how to get them when one is missing."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}: use one of {sorted(FASHION_MNIST_FILES)}")
    root = Path(data_dir or os.environ.get("GPA_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    paths = [root / name for name in FASHION_MNIST_FILES[split]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found ({missing[0]}): run `sudo apt-get install dataset-fashion-mnist` "
            "or set GPA_FASHION_MNIST_DIR to a folder with the gzip IDX files"
        )
    return paths


def fashion_mnist_arrays(split: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of the Fashion-MNIST "train" (60k) or "test" (10k) split."""
    images, labels = (read_idx(p) for p in fashion_mnist_paths(split, data_dir))
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def garment_arrays(
    train_samples: int,
    test_samples: int,
    clutter: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
    size: int | None = None,
) -> dict:
    """The first images of Fashion-MNIST's train and test splits, normalised by the train images' mean and std.

    Args:
        clutter: ``(images, seed) -> (images, masks)`` that puts each garment on a canvas (seed 1 for train, 2 for
            test); ``None`` keeps the 28x28 images, whose garment pixels (> 0) are the masks.
        size: zero-pad each image (and mask) to ``size`` x ``size`` before normalising; ``None`` keeps its size.

    Returns:
        ``train_x`` (N, 1, S, S) float32, ``train_y`` (N,) int64, ``train_mask`` (N, S, S) bool, the same for
        ``test_*``, and ``pixel_mean`` / ``pixel_std``: the train images' statistics on the [0, 1] scale.
    """
    import torch
    import torch.nn.functional as F

    arrays = {}
    for split, limit, seed in (("train", train_samples, 1), ("test", test_samples, 2)):
        images, labels = fashion_mnist_arrays(split)
        images, labels = images[:limit], labels[:limit]
        images, masks = clutter(images, seed) if clutter is not None else (images, images > 0)
        pad = 0 if size is None else (size - images.shape[-1]) // 2
        padding = (pad, pad, pad, pad)
        arrays[f"{split}_x"] = F.pad(torch.from_numpy(images.astype(np.float32) / 255.0), padding).unsqueeze(1)
        arrays[f"{split}_y"] = torch.from_numpy(labels.astype(np.int64))
        arrays[f"{split}_mask"] = F.pad(torch.from_numpy(np.ascontiguousarray(masks)), padding)
    mean, std = arrays["train_x"].mean(), arrays["train_x"].std()
    for split in ("train", "test"):
        arrays[f"{split}_x"] = (arrays[f"{split}_x"] - mean) / std
    arrays["pixel_mean"], arrays["pixel_std"] = mean, std
    return arrays
