"""The pieces run_pretrain.py and run_mim.py share: flags, splits, image geometry, error lines."""

import contextlib
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from tiny import write_image_folders

from modeling_gpa.pretraining_script import (
    HubArguments,
    ImageDataArguments,
    hub_kwargs,
    image_geometry,
    load_splits,
    one_line,
    parse_script_arguments,
    prepare_split,
)
from modeling_gpa.trainer import GPATrainingArguments
from modeling_gpa.training.masking_arguments import parse_head


@pytest.fixture
def image_dirs(tmp_path):
    """train/ (6 gray 20x20 PNGs) and val/ (2), two classes."""
    return write_image_folders(tmp_path, gray_noise, counts=(("train", 6), ("val", 2)))


def gray_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (20, 20), dtype=np.uint8)


def test_parse_head_takes_an_index_or_the_sum_of_all_heads():
    assert parse_head("3") == 3 and parse_head(-1) == -1
    assert parse_head("none") is None and parse_head("ALL") is None and parse_head(None) is None
    with pytest.raises(ValueError, match="^--gpa_head 'x' is invalid; allowed values: an integer, 'none' or 'all'.$"):
        parse_head("x")


def test_one_line_keeps_the_last_line_of_a_worker_traceback():
    error = ValueError("Caught ValueError in DataLoader worker process 0.\nTraceback ...\nValueError: bad image a.png")
    assert one_line(error) == "bad image a.png"
    assert one_line(OSError("no such file")) == "no such file"


def test_parse_script_arguments_reads_the_shared_flags_from_argv_or_json(tmp_path):
    types = (HubArguments, ImageDataArguments, GPATrainingArguments)
    argv = ["--train_dir", "images", "--max_train_samples", "8", "--cache_dir", "cache", "--output_dir", "out"]
    hub, data, training = parse_script_arguments(types, "description", argv)
    assert (data.train_dir, data.max_train_samples, data.train_val_split) == ("images", 8, 0.15)
    assert hub_kwargs(hub) == {"cache_dir": "cache", "revision": "main", "token": None, "trust_remote_code": False}
    (tmp_path / "args.json").write_text('{"train_dir": "images", "output_dir": "out", "strict_images": true}')
    _, data, training = parse_script_arguments(types, None, [str(tmp_path / "args.json")])
    assert data.strict_images and training.output_dir == "out"


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
    from modeling_gpa.data.torchvision_decoding import torchvision_decoding_available
    from modeling_gpa.pretraining_script import with_crops

    if not torchvision_decoding_available():
        pytest.skip("torchvision does not import")
    images = datasets.load_dataset("imagefolder", data_dir=str(image_dirs / "train"), split="train")
    processor = build_image_processor(16, 1)
    data = ImageDataArguments(image_decoding=image_decoding)
    train, eval_ = with_crops(images, images, processor, 1, "image", data, torch.device("cpu"))
    assert type(train).__name__ == expected and type(eval_).__name__ == "ImageDataset"
    assert train[0]["pixel_values"].shape == eval_[0]["pixel_values"].shape == (1, 16, 16)
