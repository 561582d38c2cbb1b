"""Fashion-MNIST as numpy arrays, read from the gzip IDX files of Debian's `dataset-fashion-mnist` package.

Needs only numpy: benchmarks that run on machines without `datasets` read the data through this module.
"""

from __future__ import annotations

import gzip
import os
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
