import os
import shutil
from pathlib import Path
from types import SimpleNamespace

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
    image_column,
    load_fashion_mnist,
    load_image_datasets,
    load_image_datasets_of,
    transforms_from_processor,
    with_pixel_values,
)
from modeling_gpa.data.fashion_mnist import FASHION_MNIST_DIR, read_idx
from modeling_gpa.data.pipeline import EvalCrop, PixelNormalizer, TrainCrop, UnreadableImageError
from modeling_gpa.data.shards import prepare_shards
from modeling_gpa.data.sources import hub_error_message, listing_record_path, load_from_hub_or_folder


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


def test_load_image_datasets_of_reads_the_shared_dataset_flags(image_folder):
    flags = SimpleNamespace(
        dataset_name=None,
        dataset_config_name=None,
        train_dir=str(image_folder),
        validation_dir=None,
        train_val_split=0.25,
        image_column_name=None,
    )
    dataset, column = load_image_datasets_of(flags, cache_dir=None, seed=3)
    expected, _ = load_image_datasets(train_dir=str(image_folder), train_val_split=0.25, seed=3)
    assert column == "image" and dataset["validation"]["label"] == expected["validation"]["label"]


def test_image_folder_with_validation_dir(image_folder):
    dataset, _ = load_image_datasets(train_dir=str(image_folder), validation_dir=str(image_folder))
    assert (len(dataset["train"]), len(dataset["validation"])) == (12, 12)
    with pytest.raises(ValueError, match=r"must be one of \['image', 'label'\]"):
        load_image_datasets(train_dir=str(image_folder), image_column_name="pixels")
    with pytest.raises(ValueError, match="train_val_split"):
        load_image_datasets(train_dir=str(image_folder), train_val_split=1.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_datasets(train_dir=str(image_folder / "missing"))


def test_train_val_split_zero_trains_on_every_image_and_the_held_out_count_is_logged(image_folder, caplog):
    everything, _ = load_image_datasets(train_dir=str(image_folder), train_val_split=0)
    assert len(everything["train"]) == 12 and "validation" not in everything
    with caplog.at_level("WARNING", logger="modeling_gpa.data.sources"):
        load_image_datasets(train_dir=str(image_folder), train_val_split=0.25)
    assert "Holding out 3 of 12 training images (--train_val_split 0.25)" in caplog.text
    assert "--train_val_split 0 to train on all of them" in caplog.text


def test_an_empty_train_dir_is_one_line(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images in .*empty: put image files"):
        load_image_datasets(train_dir=str(tmp_path / "empty"))


def test_the_other_processes_open_the_main_ones_listing_without_listing_the_folder(image_folder, tmp_path):
    """The record holds the Arrow files the main process built: opening them needs no folder at all."""
    cache = str(tmp_path / "cache")
    written, _ = load_image_datasets(
        train_dir=str(image_folder), cache_dir=cache, train_val_split=0.25, listing="write"
    )
    moved = image_folder.rename(image_folder.parent / "moved")
    reused, _ = load_image_datasets(train_dir=str(image_folder), cache_dir=cache, train_val_split=0.25, listing="reuse")
    assert reused["train"]["label"] == written["train"]["label"]
    assert [row["path"] for row in reused["train"].cast_column("image", datasets.Image(decode=False))["image"]] == [
        row["path"] for row in written["train"].cast_column("image", datasets.Image(decode=False))["image"]
    ]
    moved.rename(image_folder)
    assert os.path.isfile(listing_record_path(str(image_folder), None, cache))


def test_a_train_dir_of_parquet_shards_is_read_as_a_dataset(tmp_path, image_folder):
    prepare_shards(str(image_folder), str(tmp_path / "shards"), num_shards=2)
    dataset, column = load_image_datasets(train_dir=str(tmp_path / "shards"), train_val_split=0)
    assert column == "image" and len(dataset["train"]) == 12
    assert dataset["train"].features["label"].names == ["cat", "dog"]


def test_image_column_falls_back_to_first_image_feature():
    table = datasets.Dataset.from_dict(
        {"label": [0, 1], "photo": [np.zeros((8, 8), dtype=np.uint8)] * 2},
        features=datasets.Features({"label": datasets.Value("int64"), "photo": datasets.Image()}),
    )
    assert image_column(table) == "photo"
    assert image_column(table, "label") == "label"


def test_hub_name_without_network_gives_one_line_error(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    for streaming in (False, True):
        with pytest.raises(ValueError) as error:
            load_from_hub_or_folder("someone/cifar10", None, None, token="hf_abc", streaming=streaming)
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith("cannot reach the Hub for dataset someone/cifar10 (no network, or HF_HUB_OFFLINE=1)")
        assert "--dataset_name fashion_mnist" in message


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            datasets.exceptions.DatasetNotFoundError(
                "Dataset 'ILSVRC/imagenet-1k' is a gated dataset on the Hub. You must be authenticated to access it."
            ),
            "dataset ILSVRC/imagenet-1k is gated on the Hub: accept its conditions on its page with your account, "
            "then pass --token (or set HF_TOKEN",
        ),
        (
            datasets.exceptions.DatasetNotFoundError(
                "Dataset 'ILSVRC/imagenet-1k' doesn't exist on the Hub or cannot be accessed."
            ),
            "dataset ILSVRC/imagenet-1k does not exist on the Hub, or is private: check the name, pass --token",
        ),
        (
            ConnectionError("Couldn't reach 'ILSVRC/imagenet-1k' on the Hub (LocalEntryNotFoundError)"),
            "cannot reach the Hub for dataset ILSVRC/imagenet-1k",
        ),
    ],
)
def test_hub_failures_say_their_cause_and_what_to_do(error, expected):
    message = hub_error_message("ILSVRC/imagenet-1k", error)
    assert message.startswith(expected) and "\n" not in message
    assert hub_error_message("ILSVRC/imagenet-1k", KeyError("other")) is None


def test_the_token_reaches_the_hub_loader(monkeypatch):
    """`datasets` rejects an offline load before it uses the token; record what it was given."""
    given = {}

    def load_dataset(*args, **kwargs):
        given.update(kwargs)
        raise ConnectionError("Couldn't reach 'a/b' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(ValueError, match="cannot reach the Hub"):
        load_image_datasets("a/b", token="hf_secret")
    assert given["token"] == "hf_secret"


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
    assert isinstance(train, TrainCrop) and isinstance(evaluation, EvalCrop)
    assert (train.image_size, train.num_channels, train.scale) == (28, 1, (0.2, 1.0))
    normalizer = PixelNormalizer(loaded.image_mean, loaded.image_std)
    pixels = normalizer(evaluation(Image.new("L", (28, 28), 0)).unsqueeze(0))
    torch.testing.assert_close(pixels, torch.full((1, 1, 28, 28), -0.2860 / 0.3530))
    with pytest.raises(ValueError, match="num_channels=3"):
        transforms_from_processor(loaded, 3, train=False)


def _add_bad_images(folder: Path) -> tuple[Path, Path]:
    good = next(folder.glob("*/*.jpg")).read_bytes()
    truncated = folder / "cat" / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    text = folder / "dog" / "notes.png"
    text.write_text("this is not an image\n")
    return truncated, text


def test_unreadable_images_are_replaced_and_counted_where_they_are_decoded(image_folder, caplog):
    truncated, text = _add_bad_images(image_folder)
    dataset, column = load_image_datasets(train_dir=str(image_folder), validation_dir=str(image_folder))
    assert len(dataset["train"]) == 14  # nothing decoded yet: the bad files are still there
    view = with_pixel_values(dataset["train"], EvalCrop(16, 3), column)
    with caplog.at_level("WARNING", logger="modeling_gpa.data.pipeline"):
        examples = [view[index] for index in range(len(view))]
    batch = collate_pixel_values(examples)
    assert batch["pixel_values"].shape == (14, 3, 16, 16) and batch["pixel_values"].dtype == torch.uint8
    assert sorted(batch["unreadable_images"]) == sorted([str(truncated), str(text)])
    assert str(truncated) in caplog.text and str(text) in caplog.text
    strict = with_pixel_values(dataset["train"], EvalCrop(16, 3), column, strict=True)
    with pytest.raises(UnreadableImageError) as error:
        [strict[index] for index in range(len(strict))]
    message = str(error.value)
    assert "\n" not in message and "drop --strict_images" in message
    assert str(truncated) in message or str(text) in message


def test_pixel_values_collate_into_a_vitmae_batch(fashion_mnist):
    subset = fashion_mnist["test"].select(range(6))
    dataset = with_pixel_values(subset, EvalCrop(28, 1), "image", label_column="label")
    batch = collate_pixel_values_and_labels([dataset[i] for i in range(6)])
    assert batch["pixel_values"].shape == (6, 1, 28, 28) and batch["pixel_values"].dtype == torch.uint8
    assert "unreadable_images" not in batch
    # MAE's evaluation view of a 28 px image: resized to 32, the central 28 kept.
    central = subset[0]["image"].resize((32, 32), Image.Resampling.BICUBIC).crop((2, 2, 30, 30))
    np.testing.assert_array_equal(batch["pixel_values"][0, 0].numpy(), np.asarray(central))
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
    pixel_values = PixelNormalizer([0.2860], [0.3530])(collate_pixel_values(list(dataset))["pixel_values"])
    output = ViTMAEForPreTraining(config)(pixel_values)
    assert output.logits.shape == (6, 16, 49) and torch.isfinite(output.loss)


def test_with_pixel_values_converts_rgb_folder_for_gray_model(image_folder):
    dataset, column = load_image_datasets(train_dir=str(image_folder), validation_dir=str(image_folder))
    view = with_pixel_values(dataset["train"], TrainCrop(24, 1), column)
    batch = collate_pixel_values([view[i] for i in range(len(view))])
    assert batch["pixel_values"].shape == (12, 1, 24, 24)
    assert set(view[0]) == {"pixel_values"}
    with pytest.raises(ValueError, match="available columns"):
        with_pixel_values(dataset["train"], TrainCrop(24, 1), column, label_column="y")
