#!/usr/bin/env python
"""run_pretrain.py's own FSDP2 path (``run_scripts/accelerate_configs/fsdp.yaml``) end to end, on the GPUs of one
machine: accelerate runs FSDP only on GPUs, so this check cannot run on a CPU.

    python benchmarks/check_fsdp_pretrain.py --output_dir /tmp/fsdp_check

On every GPU (``--num_processes``, default all), a small GPA (ViT of 4 blocks, EMA teacher, MAM) trains 4 steps in
bf16 on 64 generated 64 px images with a checkpoint at step 2; the same command then runs again in a second folder
resumed from that checkpoint. It checks that both runs trained to step 4, that the checkpoint written through FSDP's
full state dict loads with ``from_pretrained`` (teacher included), and that the resumed run logged the uninterrupted
run's learning rate and mask fractions at steps 3 and 4. Prints one line per check and exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = (
    "patch_size=8,hidden_size=128,num_hidden_layers=4,num_attention_heads=4,intermediate_size=256,"
    "decoder_hidden_size=64,decoder_num_hidden_layers=2,decoder_num_attention_heads=4,decoder_intermediate_size=128"
)
SCHEDULE_KEYS = ("learning_rate", "hard_fraction", "soft_fraction", "random_fraction")


def write_images(folder: Path, count: int = 64) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        (folder / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"class{index % 2}" / f"{index:03d}.png")


def pretrain_command(images: Path, output_dir: Path, num_processes: int, *extra: str) -> list[str]:
    """``accelerate launch`` of run_pretrain.py with fsdp.yaml on ``num_processes`` GPUs."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += ["run_scripts/accelerate_configs/fsdp.yaml", "--num_processes", str(num_processes)]
    command += ["run_scripts/run_pretrain.py", "--train_dir", str(images), "--output_dir", str(output_dir)]
    command += ["--do_train", "--config_overrides", ARCHITECTURE, "--gpa_teacher", "ema", "--gpa_prediction", "true"]
    command += ["--per_device_train_batch_size", "8", "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1"]
    return command + ["--warmup_steps", "1", "--bf16", "--report_to", "none", "--disable_tqdm", "true", *extra]


def pretrain(images: Path, output_dir: Path, num_processes: int, *extra: str) -> subprocess.CompletedProcess:
    command = pretrain_command(images, output_dir, num_processes, *extra)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=environment, text=True, capture_output=True)


def logged(output_dir: Path) -> dict[int, dict]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry for entry in history if "loss" in entry}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--num_processes", type=int, default=None, help="Default: every visible GPU.")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        sys.exit("check_fsdp_pretrain.py: error: no GPU here; accelerate runs FSDP only on GPUs.")
    num_processes = args.num_processes or torch.cuda.device_count()
    images = args.output_dir / "images"
    write_images(images)
    checks: dict[str, bool] = {}
    first = pretrain(images, args.output_dir / "run", num_processes)
    trained = first.returncode == 0 and sorted(logged(args.output_dir / "run")) == [1, 2, 3, 4]
    checks["FSDP2 run trains to step 4"] = trained
    if first.returncode != 0:
        print(first.stdout[-3000:] + first.stderr[-3000:])
    else:
        from modeling_gpa import GPAForPreTraining

        model = GPAForPreTraining.from_pretrained(args.output_dir / "run" / "checkpoint-2")
        checks["checkpoint-2 loads with from_pretrained, teacher included"] = any(
            name.startswith("teacher.") for name in model.state_dict()
        )
        checkpoint = str(args.output_dir / "run" / "checkpoint-2")
        resumed = pretrain(images, args.output_dir / "resumed", num_processes, "--resume_from_checkpoint", checkpoint)
        checks["resume from the FSDP checkpoint trains to step 4"] = resumed.returncode == 0
        if resumed.returncode != 0:
            print(resumed.stdout[-3000:] + resumed.stderr[-3000:])
        else:
            again, uninterrupted = logged(args.output_dir / "resumed"), logged(args.output_dir / "run")
            checks["the resumed steps 3 and 4 keep the schedule"] = all(
                np.isclose(again[step][key], uninterrupted[step][key]) for step in (3, 4) for key in SCHEDULE_KEYS
            )
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}: {name} ({num_processes} GPU{'s' if num_processes > 1 else ''})")
    return 0 if checks and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
