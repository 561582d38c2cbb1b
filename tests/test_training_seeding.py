"""Randomness per process (MAE's seed + rank) in the real pretraining and fine-tuning scripts, on two CPU processes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import config_overrides, free_port, script_args

from modeling_gpa.training.seeding import process_seed

ROOT = Path(__file__).resolve().parents[1]


def test_each_process_seeds_with_the_seed_plus_its_rank():
    assert [process_seed(42, rank) for rank in range(3)] == [42, 43, 44]


@pytest.mark.slow
def test_two_processes_fed_one_image_draw_their_own_crops_masks_and_mixup_and_resume_their_own_draws(
    tmp_path, write_image_folders
):
    """Every training image is the same picture, so whatever differs between the ranks' inputs and masks was drawn
    differently: with one seed on every process they would be equal."""
    picture = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    images = write_image_folders(tmp_path / "images", lambda rng: picture, counts=(("train", 8), ("val", 2)))
    settings = ["--config_overrides", config_overrides(patch_size=7, num_hidden_layers=2)]
    settings += ["--max_steps", "2", "--save_steps", "1", "--hard_ratio_end", "1.0", "--soft_ratio_start", "0.5"]
    pretrain = script_args(images, tmp_path / "pretrain", *settings)
    finetune = ["--train_dir", str(images / "train"), "--validation_dir", str(images / "val")]
    finetune += ["--output_dir", str(tmp_path / "finetune"), "--num_train_epochs", "1", "--warmup_epochs", "0"]
    finetune += ["--total_batch_size", "8"]
    finetune += ["--per_device_train_batch_size", "4", "--save_strategy", "no", "--report_to", "none", "--use_cpu"]
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    command += ["run_scripts/accelerate_configs/cpu_2proc.yaml", "--main_process_port"]
    command += [str(free_port()), "tests/rank_draws_launch.py", str(tmp_path)]
    process = subprocess.run(
        [*command, *pretrain, "--", *finetune],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    ranks = [torch.load(tmp_path / f"draws-{rank}.pt") for rank in (0, 1)]

    # Two pretraining steps: every crop and every mask differs between the ranks, the weights do not.
    assert len(ranks[0]["pixels"]) == len(ranks[1]["pixels"]) == 2
    for step in range(2):
        for image in range(4):
            assert not torch.equal(ranks[0]["pixels"][step][image], ranks[1]["pixels"][step][image])
            assert not torch.equal(ranks[0]["masks"][step][image], ranks[1]["masks"][step][image])
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"], rtol=0, atol=0)

    # Resumed from checkpoint-1 (an epoch boundary), each rank draws its own step 2 again.
    for draws in ranks:
        assert len(draws["resumed_masks"]) == 1
        assert torch.equal(draws["resumed_pixels"][0], draws["pixels"][1])
        assert torch.equal(draws["resumed_masks"][0], draws["masks"][1])

    # Fine-tuning, one batch of 4 per rank: each rank its own Mixup/CutMix lambda and its own crop boxes.
    assert len(ranks[0]["mixup"]) == len(ranks[1]["mixup"]) == 1
    assert ranks[0]["mixup"][0][0] != ranks[1]["mixup"][0][0]
    assert len(ranks[0]["crops"]) == len(ranks[1]["crops"]) == 4
    assert sum(zero == one for zero, one in zip(ranks[0]["crops"], ranks[1]["crops"], strict=True)) <= 1
