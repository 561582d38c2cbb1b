"""run_knn.py, run_linear_probe.py and run_finetune.py end to end on a tiny image folder and checkpoint."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import swin_student, tiny_kwargs
from transformers import (
    AutoModelForImageClassification,
    BertConfig,
    BertModel,
    SwinForImageClassification,
    SwinForMaskedImageModeling,
)

from modeling_gpa import GPAConfig, GPAForPreTraining

SCRIPTS = Path(__file__).resolve().parent.parent / "run_scripts"
sys.path.insert(0, str(SCRIPTS))

import run_finetune  # noqa: E402
import run_knn  # noqa: E402
import run_linear_probe  # noqa: E402


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three classes of 28x28 grayscale noise images, one brightness level per class (a signal that survives any
    crop), eight training and four validation images each."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label in range(3):
        for split, count in (("train", 8), ("val", 4)):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 60, (28, 28)) + 90 * label
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


@pytest.mark.parametrize(("optimizer", "augment"), [("lars", "rrc"), ("sgd", "none")])
def test_linear_probe_script_learns_brightness_levels(image_folder, checkpoint, tmp_path, capsys, optimizer, augment):
    args = ["--model_name_or_path", str(checkpoint), "--optimizer", optimizer, "--epochs", "40", "--batch_size", "4"]
    args += ["--warmup_epochs", "2", "--max_train_samples", "21", "--device", "cpu", "--augment", augment]
    # LARS steps a share of the weight norm: at batch 4, MAE's lr 6.4 (blr 0.1 at batch 16384) is blr 409.6.
    args += ["--blr", "409.6" if optimizer == "lars" else "0.1"]
    results = run_linear_probe.main(args + data_args(image_folder, tmp_path))
    assert results["num_train"] == 21 and results["augment"] == augment
    assert results["lr"] == pytest.approx(6.4 if optimizer == "lars" else 0.1 * 4 / 256)
    # Brightness levels are linearly separable in a random encoder's features, on MAE's crops (scale 0.08-1) too:
    # a probe that learned nothing scores 1/3.
    assert results["top1_accuracy"] > 0.9 and results["top5_accuracy"] == 1.0
    assert results["accuracy"] == pytest.approx(results["top1_accuracy"])
    assert f"linear probe ({optimizer}, augment {augment}" in capsys.readouterr().out


def test_linear_probe_script_defaults_are_maes(tmp_path):
    args = run_linear_probe.parse_args(["--model_name_or_path", "x", "--output_dir", str(tmp_path)])
    assert (args.augment, args.optimizer, args.epochs, args.warmup_epochs) == ("rrc", "lars", 90, 10)
    assert (args.batch_size, args.blr, args.lr, args.weight_decay, args.pooling) == (16384, 0.1, None, 0.0, "cls")


def _resolved(argv: list[str], num_train: int = 1_281_167):
    """run_finetune.py's recipe and Trainer settings for ``argv``, without loading data or a model."""
    args, training_args, given = run_finetune.parse(["--model_name_or_path", "x", "--output_dir", "o", *argv])
    recipe = run_finetune.resolve_recipe(args)
    return recipe, training_args, run_finetune.apply_recipe(recipe, training_args, given, num_train)


# What main_finetune.py trains with for FINETUNE.md's ViT-B/16 and ViT-L/16 commands (one process here).
MAE_TRAINER_SETTINGS = {
    "base": {"learning_rate": 5e-4 * 1024 / 256, "num_train_epochs": 100, "drop_path": 0.1, "layer_decay": 0.65},
    "large": {"learning_rate": 1e-3 * 1024 / 256, "num_train_epochs": 50, "drop_path": 0.2, "layer_decay": 0.75},
}


@pytest.mark.parametrize("size", ["base", "large"])
def test_finetune_script_resolves_maes_recipe(size):
    recipe, training_args, resolved = _resolved(["--model_size", size, "--use_cpu"])
    expected = MAE_TRAINER_SETTINGS[size]
    assert resolved["total_batch_size"] == 1024
    assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps == 1024
    assert training_args.learning_rate == pytest.approx(expected["learning_rate"])
    assert training_args.num_train_epochs == expected["num_train_epochs"]
    assert (recipe.drop_path, recipe.layer_decay) == (expected["drop_path"], expected["layer_decay"])
    assert training_args.warmup_steps == pytest.approx(5 / expected["num_train_epochs"])
    assert training_args.max_grad_norm == 0.0 and training_args.weight_decay == 0.05
    assert training_args.lr_scheduler_type == "cosine_with_min_lr"
    assert training_args.lr_scheduler_kwargs == {"min_lr": 1e-6}
    assert training_args.dataloader_drop_last and training_args.eval_strategy == "epoch"


def test_randaugment_posterize_at_full_magnitude_gives_black_as_old_pillow():
    from PIL import Image
    from timm.data.auto_augment import AugmentOp

    run_finetune.use_zero_bit_posterize()
    image = Image.fromarray(np.full((8, 8), 200, dtype=np.uint8))
    # PosterizeIncreasing keeps 4 - int(magnitude / 10 * 4) bits: none at magnitude 10.
    posterized = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(image)
    assert np.array(posterized).max() == 0 and posterized.mode == "L"
    assert np.array(AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5)(image)).max() == 192


def test_finetune_script_flags_win_over_the_recipe():
    recipe, training_args, resolved = _resolved(
        ["--recipe", "gpa_released", "--total_batch_size", "256", "--per_device_train_batch_size", "32"]
        + [
            "--num_train_epochs",
            "10",
            "--max_grad_norm",
            "3",
            "--drop_path",
            "0",
            "--auto_augment",
            "none",
            "--use_cpu",
        ]
    )
    assert recipe.layer_decay == 0.8 and recipe.drop_path == 0.0 and recipe.auto_augment is None
    assert training_args.gradient_accumulation_steps == 8 and resolved["total_batch_size"] == 256
    assert training_args.learning_rate == pytest.approx(5e-4)
    assert training_args.warmup_steps == pytest.approx(0.5) and training_args.max_grad_norm == 3.0
    recipe, training_args, _ = _resolved(["--recipe", "plain", "--use_cpu"])
    assert training_args.learning_rate == 5e-5 and training_args.max_grad_norm == 1.0
    assert training_args.per_device_train_batch_size == 8 and training_args.num_train_epochs == 3
    assert training_args.warmup_steps == pytest.approx(0.05)
    with pytest.raises(ValueError, match="not a multiple of per-device batch"):
        _resolved(["--total_batch_size", "100", "--per_device_train_batch_size", "64", "--use_cpu"])


def test_finetune_script_trains_maes_recipe_with_mixup_and_reports_each_epoch(image_folder, checkpoint, tmp_path):
    args = ["--model_name_or_path", str(checkpoint), "--num_train_epochs", "2", "--warmup_epochs", "1"]
    args += ["--total_batch_size", "8", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8"]
    args += ["--base_learning_rate", "0.1", "--report_to", "none", "--save_strategy", "no", "--use_cpu"]
    results = run_finetune.main(args + data_args(image_folder, tmp_path))
    assert results["num_classes"] == 3 and results["num_eval"] == 12 and results["total_batch_size"] == 8
    assert results["recipe"]["name"] == "mae" and results["recipe"]["mixup"] == 0.8
    assert results["learning_rate"] == pytest.approx(0.1 * 8 / 256)
    assert [entry["epoch"] for entry in results["per_epoch"]] == [1.0, 2.0]
    # Training drops its last incomplete batch (MAE's loader); evaluation sees all 12 images in batches of 8.
    assert [entry["images"] for entry in results["per_epoch"]] == [12, 12]
    assert results["top1_accuracy"] == results["per_epoch"][-1]["top1_accuracy"]
    assert results["best_top1_accuracy"] == max(entry["top1_accuracy"] for entry in results["per_epoch"])
    assert results["top5_accuracy"] == 1.0 and np.isfinite(results["eval_loss"])
    model = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(model).__name__ == "TimmWrapperForImageClassification"
    assert model.config.model_args["global_pool"] == "avg" and model.config.model_args["drop_path_rate"] == 0.1
    assert model.config.id2label == {0: "class0", 1: "class1", 2: "class2"}
    pretrained = GPAForPreTraining.from_pretrained(checkpoint).state_dict()[
        "vit.embeddings.patch_embeddings.projection.weight"
    ]
    tuned = model.timm_model.patch_embed.proj.weight
    assert tuned.shape == pretrained.shape and not torch.equal(tuned, pretrained)


def test_finetune_script_trains_the_plain_recipe_on_uint8_batches(image_folder, checkpoint, tmp_path):
    args = ["--model_name_or_path", str(checkpoint), "--recipe", "plain", "--num_train_epochs", "1"]
    args += ["--report_to", "none", "--save_strategy", "no", "--use_cpu"]
    results = run_finetune.main(args + data_args(image_folder, tmp_path))
    assert results["total_batch_size"] == 8 and results["learning_rate"] == 5e-5 and results["max_grad_norm"] == 1.0
    assert results["recipe"]["pooling"] == "cls" and results["per_epoch"][-1]["images"] == 12
    assert np.isfinite(results["eval_loss"]) and 0.0 <= results["top1_accuracy"] <= 1.0


def test_finetune_script_fine_tunes_a_swin_simmim_checkpoint(image_folder, swin_checkpoint, tmp_path):
    args = ["--model_name_or_path", str(swin_checkpoint), "--num_train_epochs", "1", "--warmup_epochs", "0"]
    args += ["--total_batch_size", "8"]
    args += ["--learning_rate", "1e-3", "--report_to", "none", "--save_strategy", "no", "--use_cpu"]
    results = run_finetune.main(args + data_args(image_folder, tmp_path))
    assert results["num_classes"] == 3 and 0.0 <= results["top1_accuracy"] <= 1.0 and np.isfinite(results["eval_loss"])
    model = SwinForImageClassification.from_pretrained(tmp_path)
    pretrained = SwinForMaskedImageModeling.from_pretrained(swin_checkpoint)
    # Every encoder weight came from the SimMIM checkpoint and was then trained.
    embedding = "swin.embeddings.patch_embeddings.projection.weight"
    assert model.state_dict()[embedding].shape == pretrained.state_dict()[embedding].shape
    assert not torch.equal(model.state_dict()[embedding], pretrained.state_dict()[embedding])
    assert model.config.num_labels == 3 and model.config.drop_path_rate == 0.1
    with pytest.raises(ValueError, match="A Swin encoder has no CLS token: pass --pooling avg"):
        run_finetune.main(args + ["--pooling", "cls"] + data_args(image_folder, tmp_path / "cls"))


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


@pytest.mark.slow
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
    finetune_args = ["--recipe", "plain", "--num_train_epochs", "1", "--per_device_train_batch_size", "8"]
    finetune_args += ["--report_to", "none"]
    finetune_args += ["--save_strategy", "no", "--use_cpu"]
    finetune = run_finetune.main(base + finetune_args + data_args(folder_with_bad_files, tmp_path / "finetune"))
    for name, results in (("knn", knn), ("probe", probe), ("finetune", finetune)):
        assert results["unreadable_images"] == 3, name
        assert json.loads((tmp_path / name / "results.json").read_text())["unreadable_images"] == 3, name


GIT_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 1048576\n".format("0" * 64)


def test_knn_names_the_empty_training_split(image_folder, checkpoint, tmp_path):
    argv = ["--model_name_or_path", str(checkpoint), "--max_train_samples", "0", *data_args(image_folder, tmp_path)]
    with pytest.raises(ValueError, match=r"^the train split has no images after --max_train_samples 0: pass"):
        run_knn.main(argv)


def test_a_git_lfs_pointer_or_custom_code_is_refused_in_one_line_before_loading(image_folder, checkpoint, tmp_path):
    """A clone without `git lfs pull`, and a checkpoint whose config names its own code: no prompt, nothing run."""
    pointer = tmp_path / "pointer"
    shutil.copytree(checkpoint, pointer)
    (pointer / "model.safetensors").write_text(GIT_LFS_POINTER)
    custom = tmp_path / "custom"
    custom.mkdir()
    auto_map = {"AutoConfig": "configuration_mystery.MysteryConfig", "AutoModel": "modeling_mystery.MysteryModel"}
    (custom / "config.json").write_text(json.dumps({"model_type": "mystery", "auto_map": auto_map}))
    (custom / "configuration_mystery.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    expected = {
        pointer: f"--model_name_or_path {pointer} cannot be loaded: model.safetensors is a git-lfs pointer, not the "
        "weights: run git lfs pull in its repository",
        custom: f"--model_name_or_path {custom} needs its own code to load (configuration_mystery.MysteryConfig), "
        "which was not run: pass --trust_remote_code if you trust that checkpoint and have read its code",
    }
    for path, message in expected.items():
        with pytest.raises(ValueError) as error:
            run_knn.main(["--model_name_or_path", str(path), *data_args(image_folder, tmp_path / "out")])
        assert str(error.value) == message
    assert not list(custom.glob("*.ran"))


def test_finetune_script_refuses_a_model_size_the_checkpoint_contradicts_in_one_line(tmp_path):
    from transformers import ViTMAEConfig

    ViTMAEConfig(num_hidden_layers=24, hidden_size=1024).save_pretrained(tmp_path / "vitl")
    with pytest.raises(ValueError) as refused:
        run_finetune.main(["--model_name_or_path", str(tmp_path / "vitl"), "--model_size", "base", "--use_cpu"] + [
            "--output_dir", str(tmp_path / "out")
        ])  # fmt: skip
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"--model_size base does not match {tmp_path / 'vitl'}, a ViT-L (24 blocks")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("per_device_train_batch_size", 0, "--per_device_train_batch_size 0 is invalid; pass an integer >= 1."),
        ("learning_rate", -1.0, "--learning_rate -1.0 is invalid; pass a number > 0."),
    ],
)
def test_fine_tuning_refuses_a_bad_number_in_one_line_naming_the_flag(tmp_path, flag, value, message):
    with pytest.raises(ValueError) as error:
        run_finetune.FinetuneTrainingArguments(output_dir=str(tmp_path), **{flag: value})
    assert str(error.value) == message


def test_knn_refuses_an_empty_batch_in_one_line(tmp_path):
    with pytest.raises(SystemExit):
        run_knn.parse_args(["--model_name_or_path", "x", "--output_dir", str(tmp_path), "--batch_size", "0"])
