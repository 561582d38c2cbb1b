import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, ViTMAEConfig, ViTMAEForPreTraining

from modeling_gpa.data import (
    FASHION_MNIST_CLASSES,
    build_image_processor,
    collate_pixel_values,
    collate_pixel_values_and_labels,
    drop_unreadable_images,
    eval_transform,
    image_column,
    load_fashion_mnist,
    load_image_datasets,
    pretrain_transform,
    random_resized_crop_box,
    to_num_channels,
    transforms_from_processor,
    with_pixel_values,
)
from modeling_gpa.fashion_mnist import FASHION_MNIST_DIR, read_idx


def test_fashion_mnist_splits_labels_and_pixels(fashion_mnist):
    assert {k: len(v) for k, v in fashion_mnist.items()} == {"train": 60000, "test": 10000}
    assert fashion_mnist["train"].features["label"].names == list(FASHION_MNIST_CLASSES)
    counts = np.bincount(np.asarray(fashion_mnist["train"]["label"]), minlength=10)
    assert counts.tolist() == [6000] * 10
    first = fashion_mnist["train"][0]
    assert first["image"].mode == "L" and first["image"].size == (28, 28)
    assert first["label"] == 9  # the first training garment is an ankle boot
    raw = read_idx(Path(FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz")
    assert raw.shape == (60000, 28, 28)
    np.testing.assert_array_equal(np.asarray(fashion_mnist["train"][59999]["image"]), raw[59999])
    last_test = np.asarray(fashion_mnist["test"][9999]["image"])
    np.testing.assert_array_equal(last_test, read_idx(Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz")[9999])


def test_fashion_mnist_missing_files_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(Path(FASHION_MNIST_DIR) / name, tmp_path / name)
    monkeypatch.setenv("GPA_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist()


def test_fashion_mnist_by_name_uses_test_as_validation():
    dataset, column = load_image_datasets("zalando-datasets/fashion_mnist")
    assert column == "image"
    assert {k: len(v) for k, v in dataset.items()} == {"train": 60000, "validation": 10000, "test": 10000}


def test_image_folder_split_is_seeded(image_folder):
    first, column = load_image_datasets(train_dir=str(image_folder), train_val_split=0.25, seed=3)
    second, _ = load_image_datasets(train_dir=str(image_folder), train_val_split=0.25, seed=3)
    assert column == "image"
    assert (len(first["train"]), len(first["validation"])) == (9, 3)
    assert first["validation"]["label"] == second["validation"]["label"]
    assert sorted(first["train"].features["label"].names) == ["cat", "dog"]
    small, _ = load_image_datasets(train_dir=str(image_folder), seed=3, max_train_samples=4, max_eval_samples=2)
    assert (len(small["train"]), len(small["validation"])) == (4, 2)
    with pytest.raises(ValueError, match="max_train_samples=0"):
        load_image_datasets(train_dir=str(image_folder), max_train_samples=0)


def test_image_folder_with_validation_dir(image_folder):
    dataset, _ = load_image_datasets(train_dir=str(image_folder), validation_dir=str(image_folder))
    assert (len(dataset["train"]), len(dataset["validation"])) == (12, 12)
    with pytest.raises(ValueError, match=r"must be one of \['image', 'label'\]"):
        load_image_datasets(train_dir=str(image_folder), image_column_name="pixels")
    with pytest.raises(ValueError, match="train_val_split"):
        load_image_datasets(train_dir=str(image_folder), train_val_split=0.0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_datasets(train_dir=str(image_folder / "missing"))


def test_image_column_falls_back_to_first_image_feature():
    table = datasets.Dataset.from_dict(
        {"label": [0, 1], "photo": [np.zeros((8, 8), dtype=np.uint8)] * 2},
        features=datasets.Features({"label": datasets.Value("int64"), "photo": datasets.Image()}),
    )
    assert image_column(table) == "photo"
    assert image_column(table, "label") == "label"


def test_hub_name_without_network_gives_one_line_error(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError) as error:
        load_image_datasets("someone/cifar10")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("could not load dataset someone/cifar10 from the Hub (no network?)")
    assert "--dataset_name fashion_mnist" in message


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "CMYK", "1", "I;16", "F"])
@pytest.mark.parametrize("num_channels", [1, 3])
def test_to_num_channels_any_mode(mode, num_channels):
    gray = np.linspace(0, 255, 48, dtype=np.float64).reshape(6, 8)
    if mode == "I;16":
        image = Image.fromarray((gray * 257).astype(np.uint16))
    elif mode == "F":
        image = Image.fromarray((gray / 255).astype(np.float32))
    else:
        image = Image.fromarray(gray.astype(np.uint8), "L").convert(mode)
    converted = to_num_channels(image, num_channels)
    assert converted.mode == ("L" if num_channels == 1 else "RGB")
    assert converted.size == (8, 6)
    if mode in ("L", "I;16", "F", "RGB"):
        luminance = np.asarray(converted.convert("L"), dtype=np.int64)
        assert np.abs(luminance - np.rint(gray)).max() <= 1


def test_to_num_channels_rejects_other_counts():
    with pytest.raises(ValueError, match="num_channels=2"):
        to_num_channels(Image.new("RGB", (4, 4)), 2)


def test_random_resized_crop_box_is_seeded_and_in_bounds():
    torch.manual_seed(0)
    boxes = [random_resized_crop_box(64, 48, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(200)]
    torch.manual_seed(0)
    assert boxes == [random_resized_crop_box(64, 48, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(200)]
    for top, left, h, w in boxes:
        assert 0 <= top <= 48 - h and 0 <= left <= 64 - w
        assert 0.2 * 64 * 48 * 0.8 <= h * w <= 64 * 48
        assert 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
    # A 1-pixel-high strip admits no box with that aspect ratio: the central-crop fallback keeps ratio 4/3.
    assert random_resized_crop_box(100, 1, (0.2, 1.0), (3 / 4, 4 / 3)) == (0, 49, 1, 1)
    assert random_resized_crop_box(3, 30, (0.9, 1.0), (3 / 4, 4 / 3)) == (13, 0, 4, 3)


def test_pretrain_transform_shape_seed_and_normalisation():
    transform = pretrain_transform(16, 3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB")
    torch.manual_seed(1)
    first = transform(image)
    torch.manual_seed(1)
    assert torch.equal(first, transform(image))
    assert first.shape == (3, 16, 16) and first.dtype == torch.float32
    constant = transform(Image.new("L", (30, 40), 204))  # gray input, 3-channel model
    torch.testing.assert_close(constant, torch.full((3, 16, 16), (0.8 - 0.5) / 0.25))
    torch.manual_seed(0)
    views = torch.stack([pretrain_transform(8, 1, 0.0, 1.0)(Image.new("L", (20, 20), 10)) for _ in range(5)])
    torch.testing.assert_close(views, torch.full((5, 1, 8, 8), 10 / 255))


def test_pretrain_transform_flips_half_the_time():
    ramp = Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1)), "L")
    transform = pretrain_transform(32, 1, 0.0, 1.0)
    transform.scale = (1.0, 1.0)
    transform.ratio = (1.0, 1.0)
    torch.manual_seed(0)
    flips = [bool(transform(ramp)[0, 0, 0] > transform.to_tensor(ramp)[0, 0, -1] - 0.05) for _ in range(400)]
    assert 160 < sum(flips) < 240


def test_eval_transform_small_images_are_not_cropped():
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    output = eval_transform(28, 1, 0.2860, 0.3530)(Image.fromarray(pixels, "L"))
    torch.testing.assert_close(output[0], (torch.from_numpy(pixels).float() / 255 - 0.2860) / 0.3530)
    upsampled = eval_transform(56, 1, 0.0, 1.0)(Image.fromarray(pixels, "L"))
    assert upsampled.shape == (1, 56, 56)


def test_eval_transform_large_images_resize_then_center_crop():
    pixels = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    output = eval_transform(224, 3, 0.0, 1.0)(image)
    expected = image.resize((341, 256), Image.Resampling.BICUBIC).crop((58, 16, 282, 240))
    torch.testing.assert_close(output, torch.from_numpy(np.array(expected)).permute(2, 0, 1).float() / 255)


def test_transform_mean_std_must_match_channels():
    with pytest.raises(ValueError, match="num_channels=1"):
        eval_transform(28, 1, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))


def test_image_processor_defaults_round_trip_and_drive_transforms(tmp_path):
    gray = build_image_processor(28, 1)
    assert list(gray.image_mean) == [0.2860] and list(gray.image_std) == [0.3530]
    rgb = build_image_processor(224, 3)
    assert list(rgb.image_mean) == [0.485, 0.456, 0.406]
    gray.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert loaded.size["height"] == 28 and list(loaded.image_mean) == [0.2860]
    train = transforms_from_processor(loaded, 1, train=True)
    evaluation = transforms_from_processor(loaded, 1, train=False)
    assert (train.image_size, train.mean, train.std) == (28, (0.2860,), (0.3530,))
    image = Image.new("L", (28, 28), 0)
    torch.testing.assert_close(evaluation(image), torch.full((1, 28, 28), -0.2860 / 0.3530))
    with pytest.raises(ValueError, match="num_channels=3"):
        transforms_from_processor(loaded, 3, train=False)


def _add_bad_images(folder: Path) -> tuple[Path, Path]:
    good = next(folder.glob("*/*.jpg")).read_bytes()
    truncated = folder / "cat" / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    text = folder / "dog" / "notes.png"
    text.write_text("this is not an image\n")
    return truncated, text


def test_drop_unreadable_images(image_folder):
    truncated, text = _add_bad_images(image_folder)
    dataset, column = load_image_datasets(train_dir=str(image_folder), validation_dir=str(image_folder))
    assert len(dataset["train"]) == 14
    cleaned, dropped = drop_unreadable_images(dataset["train"], column)
    assert (len(cleaned), dropped) == (12, 2)
    assert all(image.size[0] >= 40 for image in cleaned[column])
    with pytest.raises(ValueError) as error:
        drop_unreadable_images(dataset["train"], column, strict=True)
    message = str(error.value)
    assert "\n" not in message and "drop --strict_images" in message and "2 bad in total" in message
    assert str(truncated) in message or str(text) in message


def test_drop_unreadable_images_skips_in_memory_arrays(fashion_mnist):
    dataset, dropped = drop_unreadable_images(fashion_mnist["train"], "image")
    assert dataset is fashion_mnist["train"] and dropped == 0


def test_pixel_values_collate_into_a_vitmae_batch(fashion_mnist):
    subset = fashion_mnist["test"].select(range(6))
    dataset = with_pixel_values(subset, eval_transform(28, 1, 0.2860, 0.3530), "image", 1, label_column="label")
    batch = collate_pixel_values_and_labels([dataset[i] for i in range(6)])
    assert batch["pixel_values"].shape == (6, 1, 28, 28)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == subset["label"]
    config = ViTMAEConfig(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )
    torch.manual_seed(0)
    output = ViTMAEForPreTraining(config)(**collate_pixel_values(list(dataset)))
    assert output.logits.shape == (6, 16, 49) and torch.isfinite(output.loss)


def test_with_pixel_values_converts_rgb_folder_for_gray_model(image_folder):
    dataset, column = load_image_datasets(train_dir=str(image_folder), validation_dir=str(image_folder))
    view = with_pixel_values(dataset["train"], pretrain_transform(24, 1, 0.5, 0.5), column, 1)
    batch = collate_pixel_values([view[i] for i in range(len(view))])
    assert batch["pixel_values"].shape == (12, 1, 24, 24)
    assert set(view[0]) == {"pixel_values"}
    with pytest.raises(ValueError, match="available columns"):
        with_pixel_values(dataset["train"], pretrain_transform(24, 1, 0.5, 0.5), column, 1, label_column="y")
