import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_gpa.data.fashion_mnist import FASHION_MNIST_DIR, fashion_mnist_arrays, garment_arrays, read_idx


def test_arrays_match_the_idx_files():
    images, labels = fashion_mnist_arrays("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10
    raw = gzip.decompress((Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz").read_bytes())
    np.testing.assert_array_equal(images[-1].ravel(), np.frombuffer(raw[-784:], dtype=np.uint8))


def test_missing_split_says_what_to_do(tmp_path):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(Path(FASHION_MNIST_DIR) / name, tmp_path / name)
    assert len(fashion_mnist_arrays("train", str(tmp_path))[0]) == 60000
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz.*apt-get install dataset-fashion-mnist"):
        fashion_mnist_arrays("test", str(tmp_path))
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split 'validation'"):
        fashion_mnist_arrays("validation")


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_garment_arrays_pad_then_normalise_by_the_train_images():
    arrays = garment_arrays(8, 4, size=32)
    images, labels = fashion_mnist_arrays("train")
    assert arrays["train_x"].shape == (8, 1, 32, 32) and arrays["test_x"].shape == (4, 1, 32, 32)
    assert arrays["train_y"].tolist() == labels[:8].tolist() and arrays["train_mask"].dtype == torch.bool
    raw = torch.nn.functional.pad(torch.from_numpy(images[:8] / 255.0).float(), (2, 2, 2, 2))
    assert torch.isclose(arrays["pixel_mean"], raw.mean()) and torch.isclose(arrays["pixel_std"], raw.std())
    torch.testing.assert_close(arrays["train_x"][:, 0], (raw - raw.mean()) / raw.std())
    torch.testing.assert_close(arrays["train_mask"], raw > 0)
    assert not arrays["test_mask"][:, :2].any()


def test_garment_arrays_put_each_garment_on_a_canvas_with_the_split_seed():
    seeds = []

    def clutter(images, seed):
        seeds.append(seed)
        return np.pad(images, ((0, 0), (1, 1), (1, 1))), np.ones((len(images), 30, 30), dtype=bool)

    arrays = garment_arrays(3, 2, clutter)
    assert seeds == [1, 2] and arrays["test_x"].shape == (2, 1, 30, 30) and arrays["test_mask"].all()
