"""SIGTERM to a whole process group, as Slurm, systemd and ``timeout`` send it: the DataLoader workers and, under
``accelerate launch``, every rank get it too. The run checkpoints the finished step, exits 143 in one line, and the
same command resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import config_overrides, free_port, script_args

from modeling_gpa.checkpoint_files import checkpoint_problem

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "run_scripts"))
import run_pretrain  # noqa: E402

OVERRIDES = config_overrides(patch_size=7, num_hidden_layers=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory, write_image_folders) -> Path:
    return write_image_folders(
        tmp_path_factory.mktemp("images"), lambda rng: rng.integers(0, 256, (28, 28), dtype=np.uint8)
    )


def start_in_its_own_group(command: list[str], log: Path) -> subprocess.Popen:
    """``timeout`` running ``command`` (it makes its own process group and passes a SIGTERM it gets to the whole
    group, as a scheduler does); output to ``log``."""
    command = ["timeout", "--preserve-status", "-s", "TERM", "600", *command]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as file:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=file, stderr=subprocess.STDOUT)


def wait_for(process: subprocess.Popen, ready, log: Path, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)


def stopped_step(out: str, output_dir: Path, count: int = 1) -> int:
    """The step named by the one-line SIGTERM report (``count`` processes print it), checked complete on disk."""
    lines = [line for line in out.splitlines() if line.startswith("run_pretrain.py: stopped by SIGTERM at step ")]
    assert len(lines) == count and "Traceback" not in out and "killed by signal" not in out, out[-3000:]
    step = int(lines[0].split("at step ")[1].split()[0])
    assert f"saved {output_dir / f'checkpoint-{step}'}; no final model, model card or push" in lines[0]
    assert checkpoint_problem(str(output_dir / f"checkpoint-{step}")) is None
    assert not (output_dir / "model.safetensors").exists()
    return step


@pytest.mark.slow
def test_sigterm_to_the_group_during_a_save_with_two_workers_exits_143_and_the_same_command_resumes(
    images, tmp_path, caplog
):
    """The signal lands while checkpoint-1 is being written, on the main process and both of its workers."""
    output_dir = tmp_path / "preempted"
    argv = script_args(images, output_dir, "--config_overrides", OVERRIDES, "--max_steps", "8", "--save_steps", "1")
    argv += ["--dataloader_num_workers", "2"]
    log = tmp_path / "log.txt"
    process = start_in_its_own_group([sys.executable, "run_scripts/run_pretrain.py", *argv], log)
    wait_for(process, lambda: (output_dir / "checkpoint-1").is_dir(), log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, log.read_text()[-3000:]
    step = stopped_step(log.read_text(), output_dir)
    assert 1 <= step < 8

    with caplog.at_level("INFO"):
        run_pretrain.main(argv)
    assert f"resuming training at {output_dir / f'checkpoint-{step}'}" in caplog.text
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, 9))


@pytest.mark.slow
def test_sigterm_to_the_group_of_an_accelerate_launch_checkpoints_on_every_rank_and_exits_143(images, tmp_path):
    output_dir = tmp_path / "ddp"
    argv = script_args(images, output_dir, "--config_overrides", OVERRIDES, "--max_steps", "500")
    argv += ["--save_strategy", "no", "--dataloader_num_workers", "1"]
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    launch += ["run_scripts/accelerate_configs/cpu_2proc.yaml", "--main_process_port", str(free_port())]
    log = tmp_path / "log.txt"
    process = start_in_its_own_group([*launch, "run_scripts/run_pretrain.py", *argv], log)
    wait_for(process, lambda: "'loss'" in log.read_text(), log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, log.read_text()[-3000:]
    step = stopped_step(log.read_text(), output_dir, count=2)
    assert {path.name for path in (output_dir / f"checkpoint-{step}").glob("rng_state_*.pth")} == {
        "rng_state_0.pth",
        "rng_state_1.pth",
    }
