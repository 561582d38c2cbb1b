import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    SwinForImageClassification,
    ViTForImageClassification,
    ViTForMaskedImageModeling,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "run_scripts"))
import run_mim  # noqa: E402
from tiny import check_two_cpu_processes_train_one_model, free_port, script_args  # noqa: E402

from modeling_gpa.data import load_image_datasets  # noqa: E402

VIT = ["--model_type", "vit", "--image_size", "32", "--patch_size", "4", "--mask_patch_size", "8"]
VIT_OVERRIDES = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64"
SWIN = ["--model_type", "swin", "--image_size", "64", "--patch_size", "4", "--mask_patch_size", "8"]
# --config_overrides splits at commas, so it cannot set a list (depths); 4 stages of one block each instead.
SWIN_OVERRIDES = "embed_dim=12,window_size=2"


@pytest.fixture(scope="module")
def images(tmp_path_factory, write_image_folders) -> Path:
    """train/ (16 gray 28x28 PNGs: a bright textured square on black) and val/ (4), two classes each."""
    return write_image_folders(tmp_path_factory.mktemp("images"), bright_square)


def bright_square(rng: np.random.Generator) -> np.ndarray:
    pixels = np.zeros((28, 28), dtype=np.uint8)
    top, left = rng.integers(0, 14, 2)
    pixels[top : top + 14, left : left + 14] = rng.integers(128, 256, (14, 14))
    return pixels


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, save_mae_teacher) -> str:
    return save_mae_teacher(tmp_path_factory.mktemp("teacher"), num_hidden_layers=2)


def mim_args(images: Path, output_dir: Path, model: list[str], overrides: str, *extra: str) -> list[str]:
    return script_args(images, output_dir, *model, "--config_overrides", overrides, *extra)


def test_help_has_run_mims_flags_and_gpas(capsys):
    with pytest.raises(SystemExit):
        run_mim.main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--model_type",
        "--mask_patch_size",
        "--mask_ratio",
        "--patch_size",
        "--encoder_stride",
        "--config_overrides",
        "--config_name_or_path",
        "--image_processor_name",
        "--mask_method",
        "--gpa_teacher",
        "--gpa_teacher_name_or_path",
        "--hard_ratio_end",
        "--gradient_accumulation_steps",
        "--mask_schedule",
    ):
        assert flag in text


def test_vit_student_with_self_teacher_feeds_progress_and_loads_for_classification(images, tmp_path):
    output_dir = tmp_path / "vit"
    argv = mim_args(images, output_dir, VIT, VIT_OVERRIDES, "--gpa_teacher", "self", "--max_steps", "3")
    trainer, checkpoint = run_mim.build_trainer(*run_mim.parse_arguments(argv))
    assert checkpoint is None
    seen = []
    forward = trainer.masker.forward

    def recording(pixel_values, progress, student, generator=None):
        masked = forward(pixel_values, progress, student, generator)
        seen.append((progress, masked.sum(1).tolist()))
        return masked

    trainer.masker.forward = recording
    trainer.train()
    trainer.save_model()
    # progress = global_step / max_steps at each step; ceil(16 * 0.6) = 10 mask patches of 2x2 model patches.
    assert [p for p, _ in seen] == [0.0, 1 / 3, 2 / 3]
    assert all(counts == [40] * 4 for _, counts in seen)
    assert trainer.model.config.encoder_stride == 4 and trainer.model.config.num_channels == 1
    model, info = ViTForImageClassification.from_pretrained(output_dir, num_labels=2, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    saved = ViTForMaskedImageModeling.from_pretrained(output_dir)
    torch.testing.assert_close(model.vit.layers[0].attention.q_proj.weight, saved.vit.layers[0].attention.q_proj.weight)
    # The evaluation scripts take a ViT SimMIM checkpoint as they take a GPA one.
    import run_knn

    knn = run_knn.main(
        ["--model_name_or_path", str(output_dir), "--output_dir", str(tmp_path / "knn"), "--pooling", "mean"]
        + ["--train_dir", str(images / "train"), "--validation_dir", str(images / "val"), "--k", "3"]
        + ["--cache_dir", str(tmp_path / "knn_cache")]
    )
    assert knn["num_train"] == 16 and knn["num_eval"] == 4 and 0.0 <= knn["top1_accuracy"] <= 1.0


def test_ema_teacher_follows_the_vit_student(images, tmp_path):
    argv = mim_args(images, tmp_path / "ema", VIT, VIT_OVERRIDES, "--gpa_teacher", "ema", "--max_steps", "2")
    argv += ["--gpa_ema_momentum", "0.5"]
    trainer, _ = run_mim.build_trainer(*run_mim.parse_arguments(argv))
    initial = trainer.model.vit.layers[0].attention.q_proj.weight.detach().clone()
    trainer.train()
    teacher = trainer.masker.teacher.layers[0].attention.q_proj.weight
    student = trainer.model.vit.layers[0].attention.q_proj.weight.detach()
    assert not torch.equal(teacher, initial) and not torch.equal(teacher, student)


@pytest.mark.parametrize("method", ["gpa", "cls_attention", "block", "random"])
def test_swin_student_with_a_pretrained_vitmae_teacher(images, tmp_path, teacher_dir, method):
    output_dir = tmp_path / f"swin_{method}"
    extra = ["--mask_method", method, "--gpa_teacher_name_or_path", teacher_dir, "--max_steps", "2", "--do_eval"]
    metrics = run_mim.main(mim_args(images, output_dir, SWIN, SWIN_OVERRIDES, *extra))
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["eval_loss"])
    model, info = SwinForImageClassification.from_pretrained(output_dir, num_labels=2, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert model.config.encoder_stride == 32 and model.config.num_channels == 1


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--mask_patch_size", "12"], "mask_patch_size=12 is invalid"),
        (["--gpa_teacher", "pretrained"], "gpa_teacher_name_or_path is required"),
        (["--gpa_teacher", "self", "--gpa_layer", "7"], "gpa_layer=7 is out of range"),
    ],
)
def test_bad_input_gives_one_line_errors(images, tmp_path, extra, expected):
    with pytest.raises(SystemExit) as exit_info:
        run_mim.main(mim_args(images, tmp_path / "bad", VIT, VIT_OVERRIDES, "--max_steps", "1", *extra))
    message = str(exit_info.value.code)
    assert message.startswith("run_mim.py: error:") and expected in message and "\n" not in message


def test_swin_refuses_the_self_teacher(images, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_mim.main(mim_args(images, tmp_path / "swin_self", SWIN, SWIN_OVERRIDES, "--gpa_teacher", "self"))
    assert "ViT student" in str(exit_info.value.code)


@pytest.mark.slow
def test_two_cpu_processes_train_one_model_with_accelerate(images, tmp_path):
    output_dir = tmp_path / "ddp"
    args = mim_args(images, output_dir, VIT, VIT_OVERRIDES, "--gpa_teacher", "ema", "--max_steps", "2")
    port = free_port()
    check_two_cpu_processes_train_one_model(
        "run_mim.py", [*args, "--save_steps", "2"], output_dir, ViTForMaskedImageModeling, port
    )


def test_few_shot_selection_sets_the_teachers_block_and_head(images, tmp_path, teacher_dir):
    argv = mim_args(images, tmp_path / "select", SWIN, SWIN_OVERRIDES, "--gpa_teacher_name_or_path", teacher_dir)
    argv += ["--gpa_selection_images", "6", "--max_steps", "1"]
    trainer, _ = run_mim.build_trainer(*run_mim.parse_arguments(argv))
    masker = trainer.masker
    from modeling_gpa.data.ground_truth import annotated_model_inputs
    from modeling_gpa.data.image_inputs import ImageSettings
    from modeling_gpa.head_selection import select_attention_head

    encoder = masker.teacher
    processor = trainer.processing_class
    settings = ImageSettings.for_config(trainer.model.config, processor.image_mean, processor.image_std)
    train, _ = load_image_datasets(
        train_dir=str(images / "train"), validation_dir=str(images / "val"), cache_dir=str(tmp_path / "cache")
    )
    train = train["train"]
    assert settings.image_size == (64, 64) and len(train) == 16
    pixel_values, objects = annotated_model_inputs(6, settings, encoder.config.patch_size, dataset=train)
    expected = select_attention_head(encoder, pixel_values, objects, mask_ratio=0.6)
    assert (masker.layer, masker.settings.head) == (expected.best_layer, expected.best_head)


def test_streams_webdataset_shards_and_records_the_position(images, tmp_path):
    from modeling_gpa.data.shards import prepare_shards

    shards = tmp_path / "wds"
    prepare_shards(str(images / "train"), str(shards), shard_format="webdataset", num_shards=2)
    args = ["--dataset_name", str(shards), "--streaming", "--train_examples", "16", "--num_train_epochs", "1"]
    args += ["--output_dir", str(tmp_path / "run"), "--do_train", "--per_device_train_batch_size", "4"]
    args += ["--mask_method", "random", "--save_steps", "2", "--report_to", "none", "--disable_tqdm", "true"]
    metrics = run_mim.main([*args, *VIT, "--config_overrides", VIT_OVERRIDES])
    assert metrics["train_loss"] > 0 and (tmp_path / "run" / "checkpoint-4" / "stream_state_rank0.json").is_file()
    with pytest.raises(SystemExit, match="with --streaming pass --gpa_layer/--gpa_head instead"):
        run_mim.main([*args, *VIT, "--config_overrides", VIT_OVERRIDES, "--gpa_selection_images", "4"])
