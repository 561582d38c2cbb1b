"""run_knn.py, run_linear_probe.py and run_finetune.py end to end on a tiny image folder and checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import swin_student, tiny_kwargs
from transformers import BertConfig, BertModel, SwinForImageClassification, SwinForMaskedImageModeling

from modeling_gpa import GPAConfig, GPAForPreTraining

SCRIPTS = Path(__file__).resolve().parent.parent / "run_scripts"
sys.path.insert(0, str(SCRIPTS))

import run_finetune  # noqa: E402
import run_knn  # noqa: E402
import run_linear_probe  # noqa: E402


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three classes of 28x28 grayscale images (a bright band at a class-specific height), eight images each."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label in range(3):
        for split, count in (("train", 8), ("val", 4)):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 60, (28, 28))
                pixels[label * 9 : label * 9 + 9] += 180
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.png")
    unlabelled = root / "flat"
    unlabelled.mkdir()
    for index in range(4):
        Image.fromarray(rng.integers(0, 255, (28, 28)).astype(np.uint8)).save(unlabelled / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpa")
    GPAForPreTraining(GPAConfig(**tiny_kwargs())).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def swin_checkpoint(tmp_path_factory):
    """A SimMIM Swin as run_mim.py saves it: 64 px gray images, patch 4, window 2, two stages of two blocks."""
    path = tmp_path_factory.mktemp("swin")
    swin_student().save_pretrained(path)
    return path


def data_args(image_folder, output_dir):
    return [
        "--train_dir",
        str(image_folder / "train"),
        "--validation_dir",
        str(image_folder / "val"),
        "--output_dir",
        str(output_dir),
    ]


def test_knn_script_writes_results_and_a_summary(image_folder, checkpoint, tmp_path, capsys):
    args = ["--model_name_or_path", str(checkpoint), "--k", "3", "--pooling", "mean", "--device", "cpu"]
    results = run_knn.main(args + data_args(image_folder, tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results
    assert saved["num_train"] == 24 and saved["num_eval"] == 12 and saved["num_classes"] == 3
    assert 0.0 <= saved["top1_accuracy"] <= saved["top3_accuracy"] == 1.0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("knn k=3 T=0.07 pooling=mean: top-1 ")


def test_knn_script_evaluates_a_swin_simmim_checkpoint_by_mean_pooling(image_folder, swin_checkpoint, tmp_path):
    args = ["--model_name_or_path", str(swin_checkpoint), "--k", "3", "--device", "cpu"]
    results = run_knn.main(args + ["--pooling", "mean"] + data_args(image_folder, tmp_path))
    assert results["num_train"] == 24 and results["num_eval"] == 12 and results["num_classes"] == 3
    assert 0.0 <= results["top1_accuracy"] <= results["top3_accuracy"] == 1.0
    with pytest.raises(ValueError, match=r"^A Swin encoder has no CLS token: pass --pooling mean\.$"):
        run_knn.main(args + ["--pooling", "cls"] + data_args(image_folder, tmp_path / "cls"))
    assert not (tmp_path / "cls").exists()


@pytest.mark.parametrize("optimizer", ["lars", "sgd"])
def test_linear_probe_script_learns_the_bands(image_folder, checkpoint, tmp_path, capsys, optimizer):
    args = ["--model_name_or_path", str(checkpoint), "--optimizer", optimizer, "--epochs", "40", "--batch_size", "4"]
    args += ["--warmup_epochs", "2", "--max_train_samples", "21", "--device", "cpu"]
    results = run_linear_probe.main(args + data_args(image_folder, tmp_path))
    assert results["num_train"] == 21
    # Bright bands at three heights are linearly separable even in a random encoder's features.
    assert results["accuracy"] > 0.6
    assert "linear probe (" in capsys.readouterr().out


def test_finetune_script_trains_with_layer_decay_and_mixup(image_folder, checkpoint, tmp_path):
    args = ["--model_name_or_path", str(checkpoint), "--num_train_epochs", "1", "--per_device_train_batch_size", "8"]
    args += ["--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--layer_decay", "0.65", "--mixup", "0.8"]
    args += ["--cutmix", "1.0", "--label_smoothing", "0.1", "--report_to", "none", "--save_strategy", "no"]
    args += ["--use_cpu"]
    results = run_finetune.main(args + data_args(image_folder, tmp_path))
    assert results["num_classes"] == 3 and results["num_eval"] == 12
    assert 0.0 <= results["accuracy"] <= 1.0 and np.isfinite(results["eval_loss"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["id2label"] == {"0": "class0", "1": "class1", "2": "class2"}


def test_finetune_script_fine_tunes_a_swin_simmim_checkpoint(image_folder, swin_checkpoint, tmp_path):
    args = ["--model_name_or_path", str(swin_checkpoint), "--num_train_epochs", "1"]
    args += ["--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--report_to", "none"]
    args += ["--save_strategy", "no", "--use_cpu"]
    results = run_finetune.main(args + data_args(image_folder, tmp_path))
    assert results["num_classes"] == 3 and 0.0 <= results["accuracy"] <= 1.0 and np.isfinite(results["eval_loss"])
    model = SwinForImageClassification.from_pretrained(tmp_path)
    pretrained = SwinForMaskedImageModeling.from_pretrained(swin_checkpoint)
    # Every encoder weight came from the SimMIM checkpoint and was then trained.
    embedding = "swin.embeddings.patch_embeddings.projection.weight"
    assert model.state_dict()[embedding].shape == pretrained.state_dict()[embedding].shape
    assert not torch.equal(model.state_dict()[embedding], pretrained.state_dict()[embedding])
    assert model.config.num_labels == 3


def test_scripts_reject_a_checkpoint_without_an_encoder(image_folder, tmp_path):
    BertModel(BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(ValueError, match="has no encoder weights"):
        run_knn.main(["--model_name_or_path", str(tmp_path / "bert")] + data_args(image_folder, tmp_path))


def test_scripts_reject_datasets_without_labels(image_folder, checkpoint, tmp_path):
    base = ["--model_name_or_path", str(checkpoint), "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="has no labels"):
        run_linear_probe.main(base + ["--train_dir", str(image_folder / "flat")])
    with pytest.raises(ValueError, match="Label column 'target' not found"):
        run_knn.main(base + ["--label_column_name", "target", "--train_dir", str(image_folder / "train")])


def test_errors_are_one_line_on_the_command_line(tmp_path):
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    command = [sys.executable, str(SCRIPTS / "run_knn.py"), "--model_name_or_path", str(tmp_path / "none")]
    command += ["--output_dir", str(tmp_path), "--train_dir", str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Cannot load an encoder from")


def test_knn_names_a_nested_subfolder_that_would_drop_every_label(image_folder, checkpoint, tmp_path):
    import shutil

    train = tmp_path / "train"
    shutil.copytree(image_folder / "train", train)
    (train / "class1" / "extra").mkdir()
    shutil.copy(train / "class1" / "0.png", train / "class1" / "extra" / "0.png")
    argv = ["--model_name_or_path", str(checkpoint), "--output_dir", str(tmp_path / "knn"), "--train_dir", str(train)]
    with pytest.raises(ValueError) as error:
        run_knn.main(argv)
    assert str(error.value) == (
        f"--train_dir {train}: {train / 'class1' / 'extra'} holds images nested one folder deeper than the other "
        "class folders' (e.g. 0.png), so no class labels can be inferred: keep every image directly in its class folder"
    )


def test_evaluation_refuses_an_encoder_with_non_finite_weights(image_folder, tmp_path):
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs()))
    with torch.no_grad():
        model.vit.layers[2].mlp.fc1.bias[3] = float("nan")
    model.save_pretrained(tmp_path / "diverged")
    with pytest.raises(ValueError, match=r"has non-finite weights \(NaN or inf\) in 1 tensors") as error:
        run_knn.main(["--model_name_or_path", str(tmp_path / "diverged")] + data_args(image_folder, tmp_path / "knn"))
    assert "evaluate an earlier checkpoint" in str(error.value) and not (tmp_path / "knn" / "results.json").exists()


@pytest.fixture(scope="module")
def folder_with_bad_files(image_folder, tmp_path_factory):
    """image_folder's train/ and val/ plus two consecutive unreadable files in train/class0 and one in val/class2."""
    import shutil

    root = tmp_path_factory.mktemp("bad")
    for split in ("train", "val"):
        shutil.copytree(image_folder / split, root / split)
    for path in (
        root / "train" / "class0" / "1a.png",
        root / "train" / "class0" / "1b.png",
        root / "val" / "class2" / "0a.png",
    ):
        path.write_bytes(b"not an image")
    return root


def test_every_evaluation_script_records_the_distinct_unreadable_files(folder_with_bad_files, checkpoint, tmp_path):
    """Index "1a" meets both train files, "1b" one of them again; linear probe, k-NN and fine-tuning count 3."""
    base = ["--model_name_or_path", str(checkpoint)]
    knn = run_knn.main(base + ["--k", "3", "--device", "cpu"] + data_args(folder_with_bad_files, tmp_path / "knn"))
    probe_args = ["--epochs", "1", "--batch_size", "8", "--warmup_epochs", "0", "--device", "cpu"]
    probe = run_linear_probe.main(base + probe_args + data_args(folder_with_bad_files, tmp_path / "probe"))
    finetune_args = ["--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--report_to", "none"]
    finetune_args += ["--save_strategy", "no", "--use_cpu"]
    finetune = run_finetune.main(base + finetune_args + data_args(folder_with_bad_files, tmp_path / "finetune"))
    for name, results in (("knn", knn), ("probe", probe), ("finetune", finetune)):
        assert results["unreadable_images"] == 3, name
        assert json.loads((tmp_path / name / "results.json").read_text())["unreadable_images"] == 3, name
