"""Every numeric training and dataset flag is checked before anything loads: one line naming the flag and its range."""

import pytest
from tiny import tiny_training_arguments

from modeling_gpa.training.arguments import ImageDataArguments
from modeling_gpa.training.flag_ranges import TRAINING_FLAG_RANGES, FlagRange


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("per_device_train_batch_size", 0, "--per_device_train_batch_size 0 is invalid; pass an integer >= 1."),
        ("per_device_eval_batch_size", -2, "--per_device_eval_batch_size -2 is invalid; pass an integer >= 1."),
        ("gradient_accumulation_steps", 0, "--gradient_accumulation_steps 0 is invalid; pass an integer >= 1."),
        ("learning_rate", -1.0, "--learning_rate -1.0 is invalid; pass a number > 0."),
        ("learning_rate", float("nan"), "--learning_rate nan is invalid; pass a number > 0."),
        ("base_learning_rate", 0.0, "--base_learning_rate 0.0 is invalid; pass a number > 0."),
        ("weight_decay", -0.1, "--weight_decay -0.1 is invalid; pass a number >= 0."),
        ("adam_beta2", 1.0, "--adam_beta2 1.0 is invalid; pass a number in [0, 1)."),
        ("num_train_epochs", 0.0, "--num_train_epochs 0.0 is invalid; pass a number > 0."),
        ("max_steps", 0, "--max_steps 0 is invalid; pass an integer >= 1 or -1."),
        ("warmup_steps", -5, "--warmup_steps -5 is invalid; pass a number >= 0."),
        ("dataloader_num_workers", -1, "--dataloader_num_workers -1 is invalid; pass an integer >= 0."),
        ("dataloader_prefetch_factor", 0, "--dataloader_prefetch_factor 0 is invalid; pass an integer >= 1."),
        ("save_steps", 0, "--save_steps 0 is invalid; pass a number > 0."),
        ("seed", -1, "--seed -1 is invalid; pass an integer in [0, 4294967295]."),
    ],
)
def test_a_bad_training_number_is_named_with_its_range(tmp_path, flag, value, expected):
    with pytest.raises(ValueError) as error:
        tiny_training_arguments(tmp_path, **{flag: value})
    assert str(error.value) == expected


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("shuffle_buffer_size", -1, "--shuffle_buffer_size -1 is invalid; pass an integer >= 0."),
        ("train_examples", 0, "--train_examples 0 is invalid; pass an integer >= 1."),
        ("max_train_samples", 0, "--max_train_samples 0 is invalid; pass an integer >= 1."),
        ("train_val_split", 1.0, "--train_val_split 1.0 is invalid; pass a number in [0, 1)."),
    ],
)
def test_a_bad_dataset_number_is_named_with_its_range(flag, value, expected):
    with pytest.raises(ValueError) as error:
        ImageDataArguments(**{flag: value})
    assert str(error.value) == expected


def test_the_defaults_and_the_ends_of_each_range_pass(tmp_path):
    tiny_training_arguments(tmp_path, max_steps=-1, warmup_steps=0, dataloader_num_workers=0, adam_beta1=0.0)
    ImageDataArguments(shuffle_buffer_size=0, train_val_split=0.0)
    assert 1 in TRAINING_FLAG_RANGES["max_steps"] and -1 in TRAINING_FLAG_RANGES["max_steps"]
    assert 2.5 not in FlagRange(low=0, integer=True) and float("inf") not in FlagRange(low=0)
