"""The image splits of the pretraining scripts: truncation, image geometry, empty splits and the decoding path."""

import contextlib
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch

from modeling_gpa.data.splits import image_geometry, load_splits, prepare_split
from modeling_gpa.training.arguments import HubArguments, ImageDataArguments


@pytest.fixture
def image_dirs(tmp_path, write_image_folders):
    """train/ (6 gray 20x20 PNGs) and val/ (2), two classes."""
    return write_image_folders(tmp_path, gray_noise, counts=(("train", 6), ("val", 2)))


def gray_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (20, 20), dtype=np.uint8)


def test_load_splits_truncates_with_the_seed_and_leaves_out_what_is_not_asked_for(image_dirs):
    data = ImageDataArguments(
        train_dir=str(image_dirs / "train"), validation_dir=str(image_dirs / "val"), max_train_samples=4
    )
    hub = HubArguments(cache_dir=str(image_dirs / "cache"))
    one_process = contextlib.nullcontext
    training = SimpleNamespace(
        seed=0, do_train=True, do_eval=False, world_size=1, main_process_first=lambda desc: one_process()
    )
    train, eval_, image_column = load_splits(hub, data, training)
    assert len(train) == 4 and eval_ is None and image_column == "image"
    assert image_geometry(train, image_column) == (20, 1)


def test_an_empty_split_is_refused_with_the_flags_to_check():
    empty = datasets.Dataset.from_dict({"image": []})
    with pytest.raises(ValueError, match="the validation split has no images: check --train_dir / --dataset_name."):
        prepare_split(empty, "validation", None, SimpleNamespace(seed=0))


@pytest.mark.parametrize("image_decoding, expected", [("cpu", "TorchvisionImageDataset"), ("pil", "ImageDataset")])
def test_training_images_are_decoded_by_torchvision_unless_pil_is_asked_for(image_dirs, image_decoding, expected):
    from modeling_gpa.data import build_image_processor
    from modeling_gpa.data.splits import with_crops
    from modeling_gpa.data.torchvision_decoding import torchvision_decoding_available

    if not torchvision_decoding_available():
        pytest.skip("torchvision does not import")
    images = datasets.load_dataset("imagefolder", data_dir=str(image_dirs / "train"), split="train")
    processor = build_image_processor(16, 1)
    data = ImageDataArguments(image_decoding=image_decoding)
    train, eval_ = with_crops(images, images, processor, 1, "image", data, torch.device("cpu"))
    assert type(train).__name__ == expected and type(eval_).__name__ == "ImageDataset"
    assert train[0]["pixel_values"].shape == eval_[0]["pixel_values"].shape == (1, 16, 16)
