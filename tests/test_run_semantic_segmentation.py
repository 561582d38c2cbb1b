import json
import sys
from pathlib import Path

import pytest
import torch
from test_data_segmentation import write_ade_folder
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig, GPAForPreTraining

SCRIPTS = Path(__file__).resolve().parent.parent / "run_scripts"
sys.path.insert(0, str(SCRIPTS))

import run_semantic_segmentation  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("gpa")
    GPAForPreTraining(GPAConfig(**tiny_kwargs(num_channels=3, num_hidden_layers=4))).save_pretrained(directory)
    return directory


def test_trains_upernet_on_an_ade20k_folder_and_scores_it(checkpoint, tmp_path):
    ade = write_ade_folder(tmp_path / "ADEChallengeData2016")
    argv = ["--model_name_or_path", str(checkpoint), "--train_dir", str(ade), "--num_labels", "2"]
    argv += ["--do_reduce_labels", "--do_train", "--do_eval", "--output_dir", str(tmp_path / "out"), "--use_cpu"]
    argv += ["--max_steps", "3", "--warmup_steps", "1", "--learning_rate", "1e-3", "--crop_size", "32"]
    argv += ["--image_scale", "64,32", "--stride", "16", "--per_device_train_batch_size", "2", "--report_to", "none"]
    argv += ["--per_device_eval_batch_size", "1", "--save_strategy", "no", "--disable_tqdm", "true"]
    argv += ["--decode_channels", "16", "--auxiliary_channels", "8"]
    results = run_semantic_segmentation.main(argv)
    recipe = results["recipe"]
    # Given flags win; the rest is MAE's recipe (accumulation makes up its total batch of 16).
    assert (recipe["max_steps"], recipe["crop_size"], recipe["stride"], recipe["learning_rate"]) == (3, 32, 16, 1e-3)
    assert (recipe["layer_decay"], recipe["drop_path"], recipe["total_batch_size"]) == (0.65, 0.1, 16)
    assert 0.0 <= results["eval_mean_iou"] <= 1.0 and set(results) >= {"eval_iou_class_0", "eval_iou_class_1"}
    assert torch.isfinite(torch.tensor(results["train_loss"]))
    saved = json.loads((tmp_path / "out" / "segmentation_results.json").read_text())
    assert saved["eval_overall_accuracy"] == results["eval_overall_accuracy"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "upernet" and config["backbone_config"]["model_type"] == "gpa"


def test_a_missing_annotation_is_a_one_line_error(checkpoint, tmp_path):
    ade = write_ade_folder(tmp_path / "ADEChallengeData2016")
    (ade / "annotations" / "training" / "ADE_training_00000000.png").unlink()
    argv = ["--model_name_or_path", str(checkpoint), "--train_dir", str(ade), "--num_labels", "2", "--do_train"]
    with pytest.raises(ValueError, match="lacks the annotations of 1 images .* needs annotations/training/<stem>.png"):
        run_semantic_segmentation.main([*argv, "--output_dir", str(tmp_path / "out")])


def test_a_bad_number_is_refused_in_one_line_naming_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"^--num_train_epochs 0 is invalid; pass a number > 0\.$"):
        run_semantic_segmentation.SegmentationTrainingArguments(output_dir=str(tmp_path), num_train_epochs=0)
