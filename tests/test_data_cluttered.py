import time

import numpy as np
import pytest
import torch

from modeling_gpa.data import (
    FASHION_MNIST_CLASSES,
    collate_pixel_values,
    fashion_mnist_arrays,
    load_image_datasets,
    with_pixel_values,
)
from modeling_gpa.data.cluttered import load_cluttered_fashion_mnist, make_cluttered, object_share
from modeling_gpa.data.pipeline import TrainCrop


@pytest.fixture(scope="module")
def garments() -> np.ndarray:
    """The first 500 Fashion-MNIST test images, (500, 28, 28) uint8."""
    return fashion_mnist_arrays("test")[0][:500]


def test_same_seed_same_bytes_and_prefix_stability(garments):
    images, masks = make_cluttered(garments[:40], seed=3)
    again, again_masks = make_cluttered(garments[:40], seed=3)
    assert images.shape == masks.shape == (40, 56, 56) and images.dtype == np.uint8 and masks.dtype == bool
    assert images.tobytes() == again.tobytes() and masks.tobytes() == again_masks.tobytes()
    prefix, prefix_masks = make_cluttered(garments[:25], seed=3)
    assert np.array_equal(prefix, images[:25]) and np.array_equal(prefix_masks, masks[:25])
    other, _ = make_cluttered(garments[:40], seed=4)
    assert (other != images).mean() > 0.5


def test_mask_is_the_pasted_garment():
    square = np.full((1, 28, 28), 255, dtype=np.uint8)
    images, masks = make_cluttered(square, seed=0, scale_range=(1.0, 1.0), background_strength=0.35)
    rows, cols = np.nonzero(masks[0])
    # A 28 px garment on a 56 px canvas: 28 px plus at most one partially covered pixel on each side.
    assert 28 <= rows.max() - rows.min() + 1 <= 30 and 28 <= cols.max() - cols.min() + 1 <= 30
    assert masks[0].sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    inner = np.zeros_like(masks[0])
    inner[rows.min() + 1 : rows.max(), cols.min() + 1 : cols.max()] = True
    assert (images[0][inner] == 255).all()
    assert images[0][~masks[0]].max() <= round(0.35 * 255)


def test_without_background_only_masked_pixels_are_lit(garments):
    images, masks = make_cluttered(garments[:100], seed=1, background_strength=0.0)
    assert not (images[~masks] > 0).any()
    assert (images[masks] > 0).mean() > 0.9  # only faint fringe pixels (alpha ramp below 32) round to 0
    # Garment sides are 0.7..1.2 of 28 px: the mask's bounding box spans at most ~34 px and sits where the garment is.
    for image, mask in zip(images, masks, strict=True):
        lit_rows, lit_cols = np.nonzero(image)
        rows, cols = np.nonzero(mask)
        assert rows.max() - rows.min() < 36 and cols.max() - cols.min() < 36
        assert abs(lit_rows.min() - rows.min()) <= 1 and abs(lit_rows.max() - rows.max()) <= 1
        assert abs(lit_cols.min() - cols.min()) <= 1 and abs(lit_cols.max() - cols.max()) <= 1


def test_object_share_is_in_the_intended_range(garments):
    _, masks = make_cluttered(garments, seed=0)
    share = object_share(masks, 8)
    assert 0.20 < share < 0.35
    assert object_share(garments > 0, 4) > 0.6  # plain Fashion-MNIST: the object is most of the image
    _, large = make_cluttered(garments[:100], seed=0, canvas_size=112)
    assert large.shape == (100, 112, 112) and 0.15 < object_share(large, 8) < 0.35


def test_object_share_counts_patches():
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 0, 0] = True
    masks[1, 7:9, 7:9] = True  # one pixel in each of the four 8x8 patches
    assert object_share(masks, 8) == pytest.approx((1 + 4) / 8)
    with pytest.raises(ValueError, match="patch_size=5"):
        object_share(masks, 5)


def test_bad_arguments_are_clear_errors(garments):
    with pytest.raises(ValueError, match="uint8"):
        make_cluttered(garments.astype(np.float32), seed=0)
    with pytest.raises(ValueError, match="scale_range"):
        make_cluttered(garments[:2], seed=0, scale_range=(1.0, 3.0))


def test_cache_round_trip(tmp_path, garments):
    start = time.perf_counter()
    built = load_cluttered_fashion_mnist(cache_dir=str(tmp_path), max_train_samples=24, max_test_samples=16)
    build_seconds = time.perf_counter() - start
    assert {k: len(v) for k, v in built.items()} == {"train": 24, "test": 16, "validation": 16}
    example = built["test"][3]
    assert example["image"].mode == "L" and example["image"].size == (56, 56)
    assert example["object_mask"].mode == "L" and set(np.unique(np.asarray(example["object_mask"]))) <= {0, 255}
    assert built["train"].features["label"].names == list(FASHION_MNIST_CLASSES)
    assert built["test"]["label"] == fashion_mnist_arrays("test")[1][:16].tolist()
    cached = list((tmp_path / "cluttered_fashion_mnist").iterdir())
    assert len(cached) == 1 and (cached[0] / "dataset_dict.json").is_file()

    start = time.perf_counter()
    loaded = load_cluttered_fashion_mnist(cache_dir=str(tmp_path), max_train_samples=24, max_test_samples=16)
    assert time.perf_counter() - start < build_seconds
    for split in ("train", "test"):
        for a, b in zip(built[split], loaded[split], strict=True):
            assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
            assert np.array_equal(np.asarray(a["object_mask"]), np.asarray(b["object_mask"]))
    masks = np.stack([np.asarray(m) > 0 for m in loaded["test"]["object_mask"]])
    images = np.stack([np.asarray(m) for m in loaded["test"]["image"]])
    assert (images[masks].mean() - images[~masks].mean()) > 40  # garments stand out from the dimmed background
    batch = collate_pixel_values(list(with_pixel_values(loaded["train"], TrainCrop(56, 1), "image")))
    assert batch["pixel_values"].shape == (24, 1, 56, 56) and batch["pixel_values"].dtype == torch.uint8
    assert "unreadable_images" not in batch  # the same uint8 pipeline as every other source
    other = load_cluttered_fashion_mnist(cache_dir=str(tmp_path), seed=1, max_train_samples=24, max_test_samples=16)
    assert len(list((tmp_path / "cluttered_fashion_mnist").iterdir())) == 2
    assert not np.array_equal(np.asarray(other["test"][0]["image"]), np.asarray(loaded["test"][0]["image"]))


def test_loads_through_load_image_datasets(tmp_path):
    dataset, column = load_image_datasets(
        "cluttered_fashion_mnist",
        "canvas_size=112,background_blur=0",
        cache_dir=str(tmp_path),
        max_train_samples=12,
        max_eval_samples=8,
    )
    assert column == "image"
    assert {k: len(v) for k, v in dataset.items()} == {"train": 12, "validation": 8, "test": 8}
    assert dataset["train"][0]["image"].size == (112, 112)
    assert set(dataset["train"].column_names) == {"image", "label", "object_mask"}
    with pytest.raises(ValueError, match="keys"):
        load_image_datasets("cluttered_fashion_mnist", "canvas=112", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not a valid int"):
        load_image_datasets("cluttered_fashion_mnist", "canvas_size=big", cache_dir=str(tmp_path))
