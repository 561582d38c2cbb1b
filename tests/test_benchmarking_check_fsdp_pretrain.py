"""benchmarks/check_fsdp_pretrain.py: run_pretrain.py's own FSDP2 path, which accelerate runs only on GPUs."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "run_scripts"))
import check_fsdp_pretrain  # noqa: E402
import run_pretrain  # noqa: E402


def test_the_checks_flags_are_run_pretrains(tmp_path):
    command = check_fsdp_pretrain.pretrain_command(tmp_path / "images", tmp_path / "run", 8, "--seed", "1")
    assert command[command.index("--config_file") + 1] == "run_scripts/accelerate_configs/fsdp.yaml"
    flags = command[command.index("run_scripts/run_pretrain.py") + 1 :]
    assert "--bf16" in flags  # Transformers refuses it where no GPU has bf16: parsed without it here
    model_args, _, training_args = run_pretrain.parse_arguments([flag for flag in flags if flag != "--bf16"])
    assert (training_args.max_steps, training_args.save_steps, training_args.seed) == (4, 2, 1)
    assert model_args.gpa_teacher == "ema" and model_args.gpa_prediction is True


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="accelerate runs FSDP only on GPUs")
def test_fsdp2_trains_saves_and_resumes_through_run_pretrain_on_the_gpus(tmp_path, capsys):
    assert check_fsdp_pretrain.main(["--output_dir", str(tmp_path)]) == 0
    assert "FAIL" not in capsys.readouterr().out
