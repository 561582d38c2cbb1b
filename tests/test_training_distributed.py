"""Resuming on another world size, and nodes without shared storage, with real accelerate launches on 127.0.0.1."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from tiny import config_overrides, free_port, script_args

from modeling_gpa.checkpoint_files import checkpoint_problem
from modeling_gpa.training.distributed import BatchGeometry, recorded_geometry, suggestion
from modeling_gpa.training.guards import SIGTERM_CHECK_STEPS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "run_scripts"))
import run_pretrain  # noqa: E402

OVERRIDES = config_overrides(patch_size=7, num_hidden_layers=2)
# The schedule numbers a resumed run must continue exactly.
SCHEDULE_KEYS = ("epoch", "learning_rate", "hard_fraction", "soft_fraction", "random_fraction")


@pytest.fixture(scope="module")
def images(tmp_path_factory, write_image_folders) -> Path:
    """16 gray 28x28 training PNGs: two steps per epoch at a total batch of 8."""
    return write_image_folders(
        tmp_path_factory.mktemp("images"), lambda rng: rng.integers(0, 256, (28, 28), dtype=np.uint8)
    )


def pretrain_args(images: Path, output_dir: Path, *extra: str) -> list[str]:
    settings = ["--config_overrides", OVERRIDES, "--max_steps", "4", "--save_steps", "2"]
    settings += ["--base_learning_rate", "1e-3", "--warmup_steps", "1"]
    settings += ["--hard_ratio_end", "1.0", "--soft_ratio_start", "0.5"]
    args = script_args(images, output_dir, *settings, *extra)
    return [arg for arg in args if arg not in ("--validation_dir", str(images / "val"))]


def launch(images: Path, output_dir: Path, *accelerate_args: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """``accelerate launch`` of run_pretrain.py with cpu_2proc.yaml and ``accelerate_args``, one thread a process;
    ``extra`` flags are added to [`pretrain_args`].

    A local disk shows new files at once: the shared-storage check waits 1 s, not 60."""
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    command += ["run_scripts/accelerate_configs/cpu_2proc.yaml", *accelerate_args]
    command += ["run_scripts/run_pretrain.py", *pretrain_args(images, output_dir, *extra)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GPA_SHARED_STORAGE_WAIT_S": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def logged_steps(output_dir: Path) -> dict[int, dict]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry for entry in history if "loss" in entry}


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_on_one_process_only_at_its_total_batch(images, tmp_path, capsys):
    two = tmp_path / "two"
    process = launch(images, two, "--main_process_port", str(free_port()))
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0, out[-3000:]
    assert recorded_geometry(str(two / "checkpoint-2")) == BatchGeometry(2, 4, 1)
    saved = json.loads((two / "checkpoint-2" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["BatchGeometryCallback"]["attributes"] == {"total_train_batch_size": 8}

    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(two / "checkpoint-2", one / "checkpoint-2")
    with pytest.raises(SystemExit) as refused:
        run_pretrain.main(pretrain_args(images, one))
    message = str(refused.value.code)
    assert "\n" not in message
    assert message.startswith(f"run_pretrain.py: error: {one / 'checkpoint-2'} was trained at a total batch of 8 (2 ")
    assert "this run's is 4 (1 process x 4 per device x 1 accumulation step)" in message
    assert "resume with a total batch of 8 (--gradient_accumulation_steps 2)" in message
    assert sorted(path.name for path in one.iterdir()) == ["checkpoint-2"]

    run_pretrain.main(pretrain_args(images, one, "--gradient_accumulation_steps", "2"))
    resumed, uninterrupted = logged_steps(one), logged_steps(two)
    assert sorted(resumed) == sorted(uninterrupted) == [1, 2, 3, 4]
    for step in (3, 4):
        assert {key: resumed[step][key] for key in SCHEDULE_KEYS} == pytest.approx(
            {key: uninterrupted[step][key] for key in SCHEDULE_KEYS}
        )
    assert recorded_geometry(str(one / "checkpoint-4")) == BatchGeometry(1, 4, 2)


@pytest.mark.slow
def test_nodes_that_do_not_share_the_output_dir_stop_at_start_in_one_line(images, tmp_path):
    """Two launches of one process each, as two nodes on 127.0.0.1, each with its own --output_dir."""
    port = str(free_port())
    nodes = [
        launch(
            images,
            tmp_path / f"node{rank}",
            *("--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2"),
            *("--main_process_ip", "127.0.0.1", "--main_process_port", port),
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    expected = f"run_pretrain.py: error: --output_dir {tmp_path / 'node0'} must be shared storage: process rank(s) 1 on"
    for node, out in zip(nodes, outputs, strict=True):
        assert node.returncode != 0, out[-3000:]
    assert expected in outputs[0]
    assert "must be shared storage: process rank(s) 1 on other nodes do not see the file rank 0 wrote" in outputs[1]
    for rank in (0, 1):
        assert not list((tmp_path / f"node{rank}").glob("checkpoint-*"))
    assert not list((tmp_path / "node0").glob(".shared-storage-check*"))


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_next_step_they_agree_on(images, tmp_path):
    """Only rank 1 gets SIGTERM; the ranks agree on it every SIGTERM_CHECK_STEPS steps, so both stop at that step,
    after rank 0 saved its checkpoint."""
    output_dir = tmp_path / "preempted"
    settings = ("--max_steps", str(3 * SIGTERM_CHECK_STEPS), "--save_strategy", "no")
    port = str(free_port())
    process = launch(images, output_dir, "--main_process_port", port, extra=settings)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "'loss'" in line:
            break
    workers = psutil.Process(process.pid).children(recursive=True)
    rank_1 = [worker for worker in workers if worker.environ().get("RANK") == "1"]
    assert len(rank_1) == 1, "".join(lines)[-3000:]
    rank_1[0].send_signal(signal.SIGTERM)
    out = "".join(lines) + process.communicate(timeout=240)[0]

    stops = re.findall(rf"run_pretrain.py: stopped by SIGTERM at step (\d+) of {settings[1]}: saved (\S+);", out)
    assert len(stops) == 2 and stops[0] == stops[1], out[-3000:]
    step = int(stops[0][0])
    assert step in (SIGTERM_CHECK_STEPS, 2 * SIGTERM_CHECK_STEPS), out[-3000:]
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == [f"checkpoint-{step}"]
    assert checkpoint_problem(str(output_dir / f"checkpoint-{step}")) is None


def test_the_suggested_flags_reach_the_checkpoints_total_batch():
    assert suggestion(8, BatchGeometry(1, 4, 1)) == "--gradient_accumulation_steps 2"
    assert suggestion(12, BatchGeometry(2, 8, 1)) == "--per_device_train_batch_size 6"
    assert BatchGeometry(2, 6, 1).total_train_batch_size == 12


def test_a_checkpoint_without_a_recorded_geometry_resumes_with_a_warning_and_records_it(tmp_path, caplog):
    from test_training_trainer import tiny_model
    from tiny import RandomImages, tiny_training_arguments

    from modeling_gpa.training.trainer import GPATrainer

    settings = dict(max_steps=2, save_strategy="steps", save_steps=2)
    GPATrainer(
        model=tiny_model(), args=tiny_training_arguments(tmp_path, **settings), train_dataset=RandomImages(4)
    ).train()
    state_file = tmp_path / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["BatchGeometryCallback"]
    state_file.write_text(json.dumps(state))

    settings["max_steps"] = 4
    trainer = GPATrainer(
        model=tiny_model(), args=tiny_training_arguments(tmp_path, **settings), train_dataset=RandomImages(4)
    )
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 4
    assert "records no world size or total batch (saved by an older version)" in caplog.text
    assert recorded_geometry(str(tmp_path / "checkpoint-4")) == BatchGeometry(1, 2, 1)


@pytest.mark.slow
def test_two_nodes_start_in_one_fresh_output_dir_every_time_with_rank_0_slow(tmp_path):
    """Two simulated nodes (one process each on 127.0.0.1) start 10 times in a fresh shared --output_dir; rank 0 is
    slow to delete its shared-storage check file. No start may take that file for a used folder."""
    port = str(free_port())
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    command += ["run_scripts/accelerate_configs/cpu_2proc.yaml", "--num_machines", "2", "--num_processes", "2"]
    command += ["--main_process_ip", "127.0.0.1", "--main_process_port", port]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GPA_SHARED_STORAGE_WAIT_S": "1"}
    nodes = [
        subprocess.Popen(
            [*command, "--machine_rank", str(rank), "tests/fresh_output_dir_launch.py", str(tmp_path), "10"],
            cwd=ROOT,
            env=environment,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    for node, out in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, out[-3000:]
    for rank, out in enumerate(outputs):
        started = [line for line in out.splitlines() if line.startswith("start ")]
        assert started == [f"start {start} rank {rank}: ok, resumes None" for start in range(10)], out[-3000:]
    assert sorted(os.listdir(tmp_path)) == sorted(f"start{start}" for start in range(10))
    assert not [name for start in range(10) for name in os.listdir(tmp_path / f"start{start}")]
