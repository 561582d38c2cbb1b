"""run_pretrain.py --streaming: two processes on their own shards, killed after a checkpoint and resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_data_streaming import solid_image_folder
from tiny import config_overrides, free_port

from modeling_gpa.data.shards import prepare_shards

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "run_scripts"))
import run_pretrain  # noqa: E402

# run_pretrain.py, recording the ids of every training batch: each image is one gray level, its id.
RECORDING_RUN = """
import json, os, signal, sys
sys.path.insert(0, "run_scripts")
import run_pretrain
from modeling_gpa.training.trainer import GPATrainer

train_step = GPATrainer.training_step

def recording_step(self, model, inputs, *args, **kwargs):
    if self.state.global_step + 1 == int(os.environ.get("KILL_AT_STEP", 0)) and self.args.process_index == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    ids = inputs["pixel_values"][:, 0, 0, 0].tolist()
    with open(os.path.join(os.environ["IDS_DIR"], f"rank{self.args.process_index}.jsonl"), "a") as file:
        file.write(json.dumps([self.state.global_step + 1, ids]) + "\\n")
    return train_step(self, model, inputs, *args, **kwargs)

GPATrainer.training_step = recording_step
run_pretrain.main(sys.argv[1:])
"""

# One epoch: 96 images over 2 processes x 4 per step is 12 steps. The shuffle buffer is the default (5,000 rows), so
# each worker holds all its rows when the run is killed.
IMAGES, SHARDS, WORKERS, MAX_STEPS, BATCH = 96, 8, 2, 12, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    prepare_shards(str(solid_image_folder(root / "images", IMAGES)), str(root / "shards"), num_shards=SHARDS)
    return root / "shards"


def stream_args(shards: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_name", str(shards), "--streaming", "--output_dir", str(output_dir), "--do_train",
        "--image_size", "8", "--config_overrides", config_overrides(patch_size=2),
        "--per_device_train_batch_size", str(BATCH),
        "--dataloader_num_workers", str(WORKERS), "--logging_steps", "1", "--disable_tqdm", "true",
        "--report_to", "none", *extra,
    ]  # fmt: skip


def recorded(ids_dir: Path, rank: int, until: int | None = None) -> list[int]:
    """The ids process ``rank`` trained on, up to step ``until``."""
    lines = [json.loads(line) for line in (ids_dir / f"rank{rank}.jsonl").read_text().splitlines()]
    return [i for step, ids in lines if until is None or step <= until for i in ids]


@pytest.mark.slow
def test_two_processes_resume_a_killed_stream_and_see_every_image_of_the_epoch_exactly_once(shards, tmp_path):
    """Killed (SIGKILL) after checkpoint 4 and run again: over the epoch's 12 steps each process trains on its own
    shards, every image exactly once (the buffers' rows are refilled from the checkpoint), and the mask schedule goes
    on from step 5."""
    output_dir, killed_ids, resumed_ids = tmp_path / "run", tmp_path / "killed_ids", tmp_path / "resumed_ids"
    killed_ids.mkdir(), resumed_ids.mkdir()
    (tmp_path / "record.py").write_text(RECORDING_RUN)
    port = free_port()
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    command += ["run_scripts/accelerate_configs/cpu_2proc.yaml", "--main_process_port", str(port)]
    command += [str(tmp_path / "record.py"), *stream_args(shards, output_dir, "--max_steps", str(MAX_STEPS))]
    command += ["--save_steps", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IDS_DIR": str(killed_ids)}
    # Rank 0 kills itself as step 6 begins, after checkpoint 4; the launcher then ends rank 1.
    killed = subprocess.run(command, cwd=ROOT, env={**env, "KILL_AT_STEP": "6"}, capture_output=True, timeout=240)
    assert killed.returncode != 0 and not (output_dir / "checkpoint-8").exists()
    assert sorted(p.name for p in (output_dir / "checkpoint-4").glob("stream_state_rank*.json")) == [
        "stream_state_rank0.json",
        "stream_state_rank1.json",
    ]

    env["IDS_DIR"] = str(resumed_ids)
    done = subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True, timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "Streaming 8 shards over 2 processes: 4 whole shards each." in out
    assert "Resuming the stream at its position" in out and "reading and discarding" not in out

    per_rank = [recorded(killed_ids, rank, until=4) + recorded(resumed_ids, rank) for rank in (0, 1)]
    for ids in per_rank:
        assert len(ids) == MAX_STEPS * BATCH and len(set(ids)) == len(ids), "an image was trained on twice"
    assert not set(per_rank[0]) & set(per_rank[1]), "the processes read the same shards"
    assert sorted(per_rank[0] + per_rank[1]) == list(range(IMAGES))

    state = json.loads((output_dir / "trainer_state.json").read_text())
    fractions = {e["step"]: e["hard_fraction"] for e in state["log_history"] if "hard_fraction" in e}
    assert sorted(fractions) == list(range(1, MAX_STEPS + 1))
    for step, fraction in fractions.items():
        assert fraction == pytest.approx(0.5 * (step - 1) / MAX_STEPS)

    # One process at the same total batch: each process's place in its own shards cannot be merged into one.
    one_process = stream_args(shards, tmp_path / "one", "--max_steps", str(MAX_STEPS), "--dataloader_num_workers", "0")
    one_process += ["--per_device_train_batch_size", str(2 * BATCH)]
    one_process += ["--resume_from_checkpoint", str(output_dir / "checkpoint-4")]
    with pytest.raises(SystemExit, match="written by 2 processes streaming their own shards, but this run has 1"):
        run_pretrain.main(one_process)


def test_epochs_over_a_stream_need_its_number_of_examples(shards, tmp_path):
    wds = tmp_path / "wds"
    prepare_shards(str(solid_image_folder(tmp_path / "images", 8)), str(wds), shard_format="webdataset", num_shards=2)
    with pytest.raises(SystemExit, match="pass --max_steps, or --train_examples N with --num_train_epochs"):
        run_pretrain.main(stream_args(wds, tmp_path / "a", "--num_train_epochs", "1"))
    metrics = run_pretrain.main(
        stream_args(shards, tmp_path / "b", "--num_train_epochs", "0.5", "--dataloader_num_workers", "0")
    )
    state = json.loads((tmp_path / "b" / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == IMAGES // 2 // BATCH and metrics["train_loss"] > 0
