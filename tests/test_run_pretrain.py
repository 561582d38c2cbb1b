import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny import (
    check_two_cpu_processes_train_one_model,
    config_overrides,
    free_port,
    script_args,
    tiny_kwargs,
)
from transformers import TrainerCallback, ViTMAEConfig, ViTMAEForPreTraining

from modeling_gpa import GPAForPreTraining
from modeling_gpa.training.masking_arguments import MASKING_FLAGS
from modeling_gpa.training.script import train_or_exit
from modeling_gpa.training.trainer import GPATrainingArguments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "run_scripts"))
import run_pretrain  # noqa: E402

TINY = {
    k: v for k, v in tiny_kwargs(patch_size=7, num_hidden_layers=2).items() if k not in ("image_size", "num_channels")
}
OVERRIDES = config_overrides(patch_size=7, num_hidden_layers=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory, write_image_folders) -> Path:
    """train/ (16 gray 28x28 PNGs and one unreadable file) and val/ (4 PNGs), two classes each."""
    root = write_image_folders(
        tmp_path_factory.mktemp("images"), lambda rng: rng.integers(0, 256, (28, 28), dtype=np.uint8)
    )
    (root / "train" / "class0" / "broken.png").write_bytes(b"not an image")
    return root


def pretrain_args(images: Path, output_dir: Path, *extra: str) -> list[str]:
    return script_args(images, output_dir, "--config_overrides", OVERRIDES, *extra)


def error_of(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_pretrain.main(argv)
    return str(exit_info.value.code)


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        run_pretrain.parse_arguments(["--help"])
    text = capsys.readouterr().out
    ours = [*dataclasses.fields(run_pretrain.ModelArguments), *dataclasses.fields(run_pretrain.DataTrainingArguments)]
    ours += [f for f in dataclasses.fields(GPATrainingArguments) if f.name in ("base_learning_rate", "mask_schedule")]
    for field in ours:
        assert f"--{field.name}" in text and field.metadata.get("help"), field.name
    for flag in (*(name for name, _, _ in MASKING_FLAGS), "strict_images", "overwrite_output_dir", "max_steps"):
        assert f"--{flag}" in text


def test_pretrains_from_scratch_with_geometry_from_the_data(images, tmp_path, capsys, caplog):
    output_dir = tmp_path / "run"
    # 17 files in batches of 4: five steps read each once, the unreadable one included (the next image replaces it).
    argv = pretrain_args(images, output_dir, "--do_eval", "--max_steps", "5", "--base_learning_rate", "1.5e-4")
    with caplog.at_level("WARNING"):
        metrics = run_pretrain.main(argv)

    assert "broken.png" in caplog.text and "Skipped 1 unreadable training images" in caplog.text
    assert metrics["train_unreadable_images"] == 1 and metrics["eval_unreadable_images"] == 0
    assert f"GPA checkpoint: {output_dir}" in capsys.readouterr().out
    for name in ("model.safetensors", "preprocessor_config.json", "trainer_state.json", "config.json"):
        assert (output_dir / name).is_file(), name
    model = GPAForPreTraining.from_pretrained(output_dir)
    assert (model.config.image_size, model.config.num_channels, model.config.patch_size) == (28, 1, 7)
    assert model.config.mask_ratio == 0.75 and model.config.norm_pix_loss
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_pixel_loss"] + metrics["eval_gpa_loss"], rel=1e-5)
    state = json.loads((output_dir / "trainer_state.json").read_text())
    logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["hard_fraction"] for entry in logs] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # base_learning_rate 1.5e-4 * 4 images / 256 at the first step, then the linear schedule decays it.
    assert logs[0]["learning_rate"] == pytest.approx(1.5e-4 * 4 / 256)


def test_random_masking_arm_is_plain_mae_through_the_same_model(images, tmp_path):
    output_dir = tmp_path / "random"
    run_pretrain.main(pretrain_args(images, output_dir, "--mask_method", "random", "--max_steps", "1"))
    config = GPAForPreTraining.from_pretrained(output_dir).config
    assert config.mask_method == "random" and not config.gpa_prediction and config.gpa_teacher == "self"
    log = json.loads((output_dir / "trainer_state.json").read_text())["log_history"][0]
    assert "gpa_loss" not in log and log["random_fraction"] == 1.0 and log["loss"] == pytest.approx(log["pixel_loss"])


def test_initialises_from_a_vitmae_checkpoint_and_lists_the_new_weights(images, tmp_path, caplog):
    torch.manual_seed(0)
    vitmae = ViTMAEForPreTraining(ViTMAEConfig(image_size=28, num_channels=1, **TINY))
    vitmae.save_pretrained(tmp_path / "vitmae")
    argv = pretrain_args(images, tmp_path / "run", "--gpa_teacher", "ema", "--gpa_head", "all", "--max_steps", "1")
    argv[argv.index("--config_overrides") : argv.index("--config_overrides") + 2] = []
    argv += ["--model_name_or_path", str(tmp_path / "vitmae")]

    with caplog.at_level("WARNING", logger="run_pretrain"):
        trainer, checkpoint = run_pretrain.build_trainer(*run_pretrain.parse_arguments(argv))
    assert checkpoint is None
    model = trainer.model
    assert model.config.gpa_teacher == "ema" and model.config.gpa_head is None
    for name, tensor in vitmae.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    message = next(record.getMessage() for record in caplog.records if "Initialised" in record.getMessage())
    assert "mam_head" in message and "teacher." in message


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--gpa_head", "first"], "--gpa_head 'first' is invalid; allowed values: an integer, 'none' or 'all'."),
        (
            ["--mask_method", "random", "--gpa_prediction", "true"],
            "gpa_prediction=True is invalid with mask_method='random'",
        ),
        (["--image_size", "30"], "image_size 30 is not a multiple of patch_size 7"),
        (["--gpa_layer", "5"], "GPAConfig.gpa_layer=5 is out of range"),
        (["--strict_images", "--max_steps", "5"], "broken.png"),
        (["--model_name_or_path", "x"], "--config_overrides only applies to a model trained from scratch"),
        (["--image_decoding", "device"], "CUDA GPU, but training runs on cpu: use --image_decoding cpu"),
        (["--max_steps", "0"], "--max_steps 0 is invalid; pass an integer >= 1 or -1."),
        (["--mask_ratio", "0"], "GPAConfig.mask_ratio=0.0 is invalid; allowed values: a number in (0, 1)."),
        (["--mask_ratio", "1"], "GPAConfig.mask_ratio=1.0 is invalid; allowed values: a number in (0, 1)."),
        (["--gpa_loss_weight", "nan"], "GPAConfig.gpa_loss_weight=nan is invalid; allowed values: a finite number"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0 is invalid; pass an integer >= 1."),
        (["--learning_rate", "-1"], "--learning_rate -1.0 is invalid; pass a number > 0."),
        (["--shuffle_buffer_size", "-1"], "--shuffle_buffer_size -1 is invalid; pass an integer >= 0."),
    ],
)
def test_bad_input_gives_one_line_errors(images, tmp_path, extra, expected):
    message = error_of(pretrain_args(images, tmp_path / "run", "--max_steps", "1", *extra))
    assert message.startswith("run_pretrain.py: error: ") and expected in message and "\n" not in message


def test_refuses_a_non_empty_output_dir_without_checkpoint_unless_overwritten(images, tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("mine")
    argv = pretrain_args(images, output_dir, "--max_steps", "1")
    assert "already exists and is not empty. Use --overwrite_output_dir" in error_of(argv)
    run_pretrain.main([*argv, "--overwrite_output_dir"])
    assert (output_dir / "model.safetensors").is_file()


def run_subprocess(command: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@pytest.mark.slow
def test_two_cpu_processes_train_one_model_with_accelerate(images, tmp_path):
    output_dir = tmp_path / "ddp"
    args = pretrain_args(images, output_dir, "--max_steps", "2", "--save_steps", "2")
    port = free_port()
    check_two_cpu_processes_train_one_model("run_pretrain.py", args, output_dir, GPAForPreTraining, port)


@pytest.mark.slow
def test_two_cpu_processes_train_one_model_with_each_other_mask_strategy(images, tmp_path):
    """GPA's own two-process run is the test above; the strategies whose training differs from it under DDP train the
    same way and record themselves: ``block`` (no teacher, as ``random``) and ``hpm`` (an EMA copy of the whole model
    and a loss predictor). ``cls_attention`` scores with GPA's self teacher and differs only in the score's formula."""
    for method in ("block", "hpm"):
        output_dir = tmp_path / method
        args = pretrain_args(images, output_dir, "--mask_method", method, "--max_steps", "2", "--save_steps", "2")
        port = free_port()
        check_two_cpu_processes_train_one_model("run_pretrain.py", args, output_dir, GPAForPreTraining, port)
        config = GPAForPreTraining.from_pretrained(output_dir).config
        assert config.mask_method == method and config.gpa_teacher == ("ema" if method == "hpm" else "self")


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (pip install '.[deepspeed]')"
)
@pytest.mark.slow
def test_deepspeed_zero2_bf16_trains_gpa_on_two_cpu_processes(images, tmp_path):
    """deepspeed_zero2.yaml as shipped (ZeRO-2, bf16) on DeepSpeed's CPU accelerator, through tests/bf16_cpu_launch.py.

    ``--ddp_backend gloo``: without a GPU, accelerate counts the processes of a DeepSpeed run only when given a backend.
    """
    output_dir = tmp_path / "zero2"
    args = pretrain_args(images, output_dir, "--max_steps", "2", "--save_steps", "2", "--gpa_teacher", "ema")
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    command += ["run_scripts/accelerate_configs/deepspeed_zero2.yaml", "--num_processes", "2"]
    command += ["--main_process_port", str(free_port()), "tests/bf16_cpu_launch.py", *args]
    command += ["--bf16", "--ddp_backend", "gloo"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "DS_BUILD_OPS": "0"}
    process = subprocess.run(command, cwd=ROOT, env=environment, text=True, capture_output=True, timeout=240)
    out = process.stdout + process.stderr
    assert process.returncode == 0, out[-3000:]
    assert "Process rank 0: trained to step 2." in out and "Process rank 1: trained to step 2." in out
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in out
    shards = sorted(path.name for path in (output_dir / "checkpoint-2" / "global_step2").iterdir())
    assert shards == [
        "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "mp_rank_00_model_states.pt",
    ]
    losses = [entry for entry in json.loads((output_dir / "trainer_state.json").read_text())["log_history"]]
    assert [entry["step"] for entry in losses if "loss" in entry] == [1, 2]
    assert all(np.isfinite(entry["loss"]) and entry["gpa_loss"] > 0 for entry in losses if "loss" in entry)
    model = GPAForPreTraining.from_pretrained(output_dir)
    assert model.dtype == torch.bfloat16 and any(name.startswith("teacher.") for name in model.state_dict())


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes_exactly(images, tmp_path):
    """SIGKILL after the first checkpoint, then rerun the same command: it ends where the uninterrupted run does.

    17 files (one unreadable, replaced by the next image) in batches of 4 make 5 steps per epoch; checkpoints every 5
    steps sit at epoch boundaries, where the resumed run continues bit for bit (see GPATrainer.train).
    """
    settings = ["--max_steps", "40", "--save_steps", "5", "--gpa_teacher", "ema", "--gpa_ema_momentum", "0.5"]
    settings += ["--learning_rate", "1e-2"]
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    command = [sys.executable, "run_scripts/run_pretrain.py", *pretrain_args(images, killed_dir, *settings)]
    process = run_subprocess(command)
    deadline = time.monotonic() + 240
    while not (killed_dir / "checkpoint-5" / "trainer_state.json").is_file():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    out, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL, out[-3000:]
    assert not (killed_dir / "model.safetensors").exists()

    run_pretrain.main(pretrain_args(images, killed_dir, *settings))
    run_pretrain.main(pretrain_args(images, reference_dir, *settings))

    resumed, reference = load_file(killed_dir / "model.safetensors"), load_file(reference_dir / "model.safetensors")
    assert any(name.startswith("teacher.") for name in reference)
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-6, atol=1e-7, msg=name)
    resumed_state = json.loads((killed_dir / "trainer_state.json").read_text())
    reference_state = json.loads((reference_dir / "trainer_state.json").read_text())
    assert resumed_state["global_step"] == reference_state["global_step"] == 40
    keys = ("step", "loss", "pixel_loss", "gpa_loss", "hard_fraction", "soft_fraction", "random_fraction")
    resumed_logs = {entry["step"]: entry for entry in resumed_state["log_history"] if "loss" in entry}
    for entry in reference_state["log_history"]:
        if "loss" in entry:
            assert {k: resumed_logs[entry["step"]][k] for k in keys} == pytest.approx({k: entry[k] for k in keys})


def fashion_mnist_pretrain(output_dir: Path, max_steps: int, *extra: str) -> None:
    """A few steps of batch 8 on 64 Fashion-MNIST images, in this process."""
    run_pretrain.main(
        ["--dataset_name", "fashion_mnist", "--max_train_samples", "64", "--output_dir", str(output_dir), "--do_train"]
        + ["--config_overrides", OVERRIDES, "--per_device_train_batch_size", "8", "--max_steps", str(max_steps)]
        + ["--disable_tqdm", "true", "--report_to", "none", *extra]
    )


def test_few_shot_selection_sets_the_teachers_block_and_head(tmp_path):
    output_dir = tmp_path / "selected"
    fashion_mnist_pretrain(output_dir, 1, "--gpa_selection_images", "10", "--gpa_selection_heldout", "20")
    table = json.loads((output_dir / "head_selection.json").read_text())
    config = GPAForPreTraining.from_pretrained(output_dir).config
    assert table["num_images"] == 10 and table["heldout"]["num_images"] == 20
    assert (config.gpa_layer, config.gpa_head) == (table["best"]["layer"], table["best"]["head"])


def test_selection_repeated_during_training_follows_the_changing_self_teacher(tmp_path):
    output_dir = tmp_path / "reselected"
    fashion_mnist_pretrain(output_dir, 4, "--gpa_selection_images", "10", "--gpa_selection_steps", "2")
    history = json.loads((output_dir / "head_reselection.json").read_text())
    assert history["every_steps"] == 2 and [entry["step"] for entry in history["selections"]] == [0, 2, 4]
    model = GPAForPreTraining.from_pretrained(output_dir)
    last = history["selections"][-1]
    assert (model.config.gpa_layer, model.config.gpa_head) == (last["layer"], last["head"])
    assert 0.0 < last["recall"] <= last["recall_ceiling"] + 1e-6


@pytest.mark.parametrize("steps, selection", [("0", "10"), ("3", None)])
def test_selection_steps_needs_a_positive_count_and_selection_images(images, tmp_path, steps, selection):
    extra = ["--gpa_selection_steps", steps] + (["--gpa_selection_images", selection] if selection else [])
    message = error_of(pretrain_args(images, tmp_path / "run", "--max_steps", "1", *extra))
    assert f"--gpa_selection_steps {steps} is invalid" in message and "--gpa_selection_images" in message


def preset_config(*flags: str):
    model_args, _, _ = run_pretrain.parse_arguments(["--output_dir", "unused", "--do_train", *flags])
    return run_pretrain.build_config(model_args, None, "image")


def test_a_preset_writes_plain_fields_and_explicit_flags_win():
    config = preset_config("--config_overrides", OVERRIDES, "--gpa_preset", "released", "--soft_ratio_start", "0.2")
    # The student scores its own patches: 2 blocks, 4 heads -> block max(2 - 3, 0) = 0, head 3.
    assert (config.gpa_layer, config.gpa_head) == (0, 3)
    assert (config.soft_ratio_start, config.soft_ratio_end, config.hard_ratio_end) == (0.2, 0.0, 0.5)
    assert (config.gpa_loss_patches, config.gpa_target_norm) == ("all", "released")
    assert "preset" not in config.to_json_string()
    vit_base = preset_config("--gpa_preset", "paper", "--gpa_layer", "-1")
    assert (vit_base.gpa_layer, vit_base.gpa_head, vit_base.gpa_loss_patches) == (-1, 11, "visible")


def test_a_preset_reads_the_pretrained_teachers_depth(tmp_path):
    teacher = tmp_path / "teacher"
    ViTMAEConfig(**{**TINY, "num_hidden_layers": 5, "num_attention_heads": 2}).save_pretrained(teacher)
    flags = ["--config_overrides", OVERRIDES, "--gpa_teacher", "pretrained", "--gpa_teacher_name_or_path", str(teacher)]
    config = preset_config(*flags, "--gpa_preset", "released_mam")
    assert (config.gpa_layer, config.gpa_head, config.soft_ratio_end, config.gpa_prediction) == (2, 1, 0.3, True)


def test_push_without_network_fails_in_one_line_and_keeps_the_checkpoint(images, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir = tmp_path / "pushed"
    argv = pretrain_args(images, output_dir, "--max_steps", "1", "--push_to_hub", "--hub_model_id", "someone/gpa-tiny")
    message = error_of(argv)
    assert "could not reach the Hugging Face Hub" in message and "\n" not in message.strip()
    card = (output_dir / "README.md").read_text()
    assert "library_name: transformers" in card and "--hub_model_id" in card
    loaded = GPAForPreTraining.from_pretrained(output_dir)
    assert loaded.config.gpa_teacher == "self"


@pytest.mark.slow
def test_sigterm_checkpoints_exits_143_publishes_nothing_and_the_same_command_resumes(
    images, tmp_path, monkeypatch, caplog
):
    """What a preemptible GPU sends before it is taken away: the run saves where it is and says so in one line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir = tmp_path / "preempted"
    settings = ["--max_steps", "30", "--save_strategy", "no", "--gpa_teacher", "ema"]
    publish = ["--push_to_hub", "--hub_model_id", "someone/gpa-tiny"]
    command = [sys.executable, "run_scripts/run_pretrain.py", *pretrain_args(images, output_dir, *settings, *publish)]
    process = run_subprocess(command, PYTHONUNBUFFERED="1")
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "'loss'" in line:
            break
    process.send_signal(signal.SIGTERM)
    out = "".join(lines) + process.communicate(timeout=120)[0]

    assert process.returncode == 143, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert (
        last.startswith("run_pretrain.py: stopped by SIGTERM at step ") and "no final model, model card or push" in last
    )
    step = int(last.split("at step ")[1].split()[0])
    assert 1 <= step < 30 and f"saved {output_dir / f'checkpoint-{step}'}" in last
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == [f"checkpoint-{step}"]
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "README.md").exists()
    assert "Hugging Face Hub" not in out

    with caplog.at_level("INFO"):
        run_pretrain.main(pretrain_args(images, output_dir, *settings))
    assert f"resuming training at {output_dir / f'checkpoint-{step}'}" in caplog.text
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, 31))
    assert (output_dir / "README.md").is_file()


def test_a_diverging_run_exits_in_one_line_without_saving_or_publishing(images, tmp_path):
    output_dir = tmp_path / "diverged"
    argv = pretrain_args(
        images, output_dir, "--learning_rate", "1e3", "--max_steps", "20", "--max_nonfinite_steps", "3"
    )
    message = error_of(argv)
    assert message.startswith("run_pretrain.py: error: training stopped at step ") and "\n" not in message
    assert "NaN or inf at 3 optimizer steps in a row" in message
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "README.md").exists()


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("broken", ["trainer_state.json", "model.safetensors"])
def test_resume_falls_back_past_a_last_checkpoint_that_cannot_load(images, tmp_path, caplog, broken):
    output_dir = tmp_path / "run"
    settings = ["--max_steps", "4", "--save_steps", "2"]
    run_pretrain.main(pretrain_args(images, output_dir, *settings))
    for name in ("model.safetensors", "trainer_state.json", "README.md"):
        (output_dir / name).unlink()
    truncate(output_dir / "checkpoint-4" / broken)

    with caplog.at_level("INFO"):
        run_pretrain.main(pretrain_args(images, output_dir, *settings))
    assert f"Skipping checkpoint {output_dir / 'checkpoint-4'}, which cannot be loaded: {broken}" in caplog.text
    assert "resuming training at " + str(output_dir / "checkpoint-2") in caplog.text
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]

    explicit = error_of(pretrain_args(images, tmp_path / "other", "--resume_from_checkpoint", str(output_dir / "x")))
    assert explicit.startswith(f"run_pretrain.py: error: cannot resume from {output_dir / 'x'}: no such directory")


def test_a_checkpoint_cut_off_while_saving_never_blocks_the_restart(images, tmp_path, caplog):
    """What SIGTERM or SIGKILL during the first save leaves: checkpoint-N with the model's code and config only."""
    output_dir = tmp_path / "run"
    (output_dir / "checkpoint-3").mkdir(parents=True)
    (output_dir / "checkpoint-3" / "config.json").write_text("{}")
    (output_dir / "checkpoint-3" / "modeling_gpa.py").write_text("")
    with caplog.at_level("WARNING"):
        run_pretrain.main(pretrain_args(images, output_dir, "--max_steps", "1"))
    assert (
        f"Skipping checkpoint {output_dir / 'checkpoint-3'}, which cannot be loaded: it has no weights" in caplog.text
    )
    assert (output_dir / "model.safetensors").is_file()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted at tmp_path/disk (needs root, as on the training machines' containers)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


class FillDiskAfterFirstStep(TrainerCallback):
    def __init__(self, disk: Path):
        self.disk = disk

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            with open(self.disk / "filler", "wb") as file, contextlib.suppress(OSError):
                while True:
                    file.write(b"\0" * 2**16)


@pytest.mark.slow
def test_a_disk_that_fills_up_during_a_save_ends_in_one_line(images, small_disk):
    output_dir = small_disk / "run"
    argv = pretrain_args(images, output_dir, "--max_steps", "3", "--save_steps", "2")
    model_args, data_args, training_args = run_pretrain.parse_arguments(argv)
    trainer, checkpoint = run_pretrain.build_trainer(model_args, data_args, training_args)
    trainer.add_callback(FillDiskAfterFirstStep(small_disk))
    with pytest.raises(SystemExit) as exit_info:
        train_or_exit("run_pretrain.py", trainer, training_args, checkpoint)
    message = str(exit_info.value.code)
    assert message.startswith(f"run_pretrain.py: error: writing to --output_dir {output_dir} failed at step 2 (")
    assert "No space left on device" in message and "\n" not in message


@pytest.mark.slow
def test_a_disk_without_room_for_a_checkpoint_or_read_only_fails_before_training(images, small_disk):
    (small_disk / "filler").write_bytes(b"\0" * (4 * 2**20 - 2**16))
    message = error_of(pretrain_args(images, small_disk / "run", "--max_steps", "1"))
    assert "MiB free but a checkpoint of this model takes about" in message and "\n" not in message
    (small_disk / "filler").unlink()
    (small_disk / "run").mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    # A --train_dir that does not exist: the output directory is checked before any data is read.
    argv = pretrain_args(images, small_disk / "run", "--max_steps", "1", "--train_dir", str(small_disk / "missing"))
    message = error_of(argv)
    assert message == (
        f"run_pretrain.py: error: --output_dir {small_disk / 'run'} is not writable (Read-only file system): pick "
        "another --output_dir, or make it writable"
    )


def save_teacher(path: Path, num_channels: int = 1) -> Path:
    torch.manual_seed(0)
    ViTMAEForPreTraining(ViTMAEConfig(image_size=28, num_channels=num_channels, **TINY)).save_pretrained(path)
    return path


def three_channel_teacher(path: Path) -> tuple[list[str], str]:
    flags = ["--gpa_teacher", "pretrained", "--gpa_teacher_name_or_path", str(save_teacher(path, num_channels=3))]
    return flags, "takes 3-channel images but the student 1-channel ones"


def truncated_teacher(path: Path) -> tuple[list[str], str]:
    truncate(save_teacher(path) / "model.safetensors")
    flags = ["--gpa_teacher", "pretrained", "--gpa_teacher_name_or_path", str(path)]
    return flags, "cannot be loaded: model.safetensors is truncated"


def nan_teacher(path: Path) -> tuple[list[str], str]:
    teacher = ViTMAEForPreTraining.from_pretrained(save_teacher(path))
    with torch.no_grad():
        teacher.vit.layers[0].attention.k_proj.weight.fill_(float("nan"))
    teacher.save_pretrained(path)
    flags = ["--gpa_teacher", "pretrained", "--gpa_teacher_name_or_path", str(path)]
    return flags, "has non-finite weights (NaN or inf) in 1 tensors (first: 'layers.0.attention.k_proj.weight')"


def empty_train_dir(path: Path) -> tuple[list[str], str]:
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("no images here")
    return ["--train_dir", str(path)], f"--train_dir {path} holds no image files"


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def malicious_pickle(path: Path) -> tuple[list[str], str]:
    ViTMAEConfig(image_size=28, num_channels=1, **TINY).save_pretrained(path)
    torch.save({"weight": RunsCode()}, path / "pytorch_model.bin")
    return ["--model_name_or_path", str(path)], "refused to load a pickled checkpoint file that would run code"


def git_lfs_pointer_model(path: Path) -> tuple[list[str], str]:
    save_teacher(path)
    (path / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\nsize 1048576\n")
    flags = ["--model_name_or_path", str(path)]
    return flags, f"--model_name_or_path {path} cannot be loaded: model.safetensors is a git-lfs pointer"


def custom_code_model(path: Path) -> tuple[list[str], str]:
    path.mkdir()
    auto_map = {"AutoConfig": "configuration_mystery.MysteryConfig"}
    (path / "config.json").write_text(json.dumps({"model_type": "mystery", "auto_map": auto_map}))
    (path / "configuration_mystery.py").write_text("import os\nopen(os.path.dirname(__file__) + '/pwned', 'w')\n")
    return ["--model_name_or_path", str(path)], "needs its own code to load (configuration_mystery.MysteryConfig)"


@pytest.mark.parametrize(
    "make",
    [
        three_channel_teacher,
        truncated_teacher,
        nan_teacher,
        empty_train_dir,
        malicious_pickle,
        git_lfs_pointer_model,
        custom_code_model,
    ],
)
def test_bad_models_and_data_fail_in_one_line_before_training(images, tmp_path, make):
    flags, expected = make(tmp_path / "input")
    argv = pretrain_args(images, tmp_path / "run", "--max_steps", "1", *flags)
    if "--model_name_or_path" in flags:
        argv[argv.index("--config_overrides") : argv.index("--config_overrides") + 2] = []
    if "--train_dir" in flags:
        argv[argv.index("--validation_dir") : argv.index("--validation_dir") + 2] = []
    message = error_of(argv)
    assert message.startswith("run_pretrain.py: error: ") and expected in message and "\n" not in message
    assert not (tmp_path / "run" / "trainer_state.json").exists() and not list(tmp_path.rglob("pwned"))
