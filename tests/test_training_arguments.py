"""The flags run_pretrain.py and run_mim.py share, from argv or a .json file."""

import pytest

from modeling_gpa.training.arguments import (
    HubArguments,
    ImageDataArguments,
    hub_kwargs,
    parse_head,
    parse_script_arguments,
)
from modeling_gpa.training.trainer import GPATrainingArguments


def test_parse_head_takes_an_index_or_the_sum_of_all_heads():
    assert parse_head("3") == 3 and parse_head(-1) == -1
    assert parse_head("none") is None and parse_head("ALL") is None and parse_head(None) is None
    with pytest.raises(ValueError, match="^--gpa_head 'x' is invalid; allowed values: an integer, 'none' or 'all'.$"):
        parse_head("x")


def test_parse_script_arguments_reads_the_shared_flags_from_argv_or_json(tmp_path):
    types = (HubArguments, ImageDataArguments, GPATrainingArguments)
    argv = ["--train_dir", "images", "--max_train_samples", "8", "--cache_dir", "cache", "--output_dir", "out"]
    hub, data, training = parse_script_arguments(types, "description", argv)
    assert (data.train_dir, data.max_train_samples, data.train_val_split) == ("images", 8, 0.15)
    assert hub_kwargs(hub) == {"cache_dir": "cache", "revision": "main", "token": None, "trust_remote_code": False}
    (tmp_path / "args.json").write_text('{"train_dir": "images", "output_dir": "out", "strict_images": true}')
    _, data, training = parse_script_arguments(types, None, [str(tmp_path / "args.json")])
    assert data.strict_images and training.output_dir == "out"
