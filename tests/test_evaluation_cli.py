"""What the evaluation scripts share: label columns and labelled splits."""

import pytest
import torch

from modeling_gpa.evaluation import (
    find_label_column,
)


def test_find_label_column_errors_say_what_to_pass():
    import datasets

    labelled = datasets.Dataset.from_dict({"image": [None], "label": [0]})
    unlabelled = datasets.Dataset.from_dict({"image": [None]})
    assert find_label_column(labelled) == "label"
    with pytest.raises(ValueError, match="Label column 'target' not found"):
        find_label_column(labelled, "target")
    with pytest.raises(ValueError, match="has no labels"):
        find_label_column(unlabelled)


def test_labelled_splits_use_the_processor_saved_with_the_checkpoint(image_folder, tmp_path):
    from argparse import Namespace

    from modeling_gpa.data import build_image_processor
    from modeling_gpa.evaluation import load_labelled_splits

    build_image_processor(28, 1, mean=[0.5], std=[0.25]).save_pretrained(tmp_path)
    args = Namespace(
        dataset_name=None,
        dataset_config_name=None,
        train_dir=str(image_folder),
        validation_dir=None,
        train_val_split=0.25,
        cache_dir=None,
        seed=0,
        image_column_name=None,
        label_column_name=None,
        max_train_samples=5,
        max_eval_samples=None,
    )
    data = load_labelled_splits(args, image_size=16, num_channels=1, processor_path=str(tmp_path))
    assert tuple(data["processor"].image_mean) == (0.5,) and data["num_classes"] == 2
    assert len(data["train"]) == 5 and len(data["eval"]) == 3
    example = data["eval"][0]
    assert example["pixel_values"].shape == (1, 16, 16) and example["labels"] in (0, 1)
    assert example["pixel_values"].dtype == torch.uint8
    pixels = data["normalizer"](example["pixel_values"][None])
    torch.testing.assert_close(pixels, (example["pixel_values"][None].float() / 255 - 0.5) / 0.25)
