"""benchmarks/check_mmseg_loading.py: the report of our weights in mmsegmentation's MAE backbone."""

import json
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig, GPAForPreTraining

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import check_mmseg_loading  # noqa: E402


@pytest.mark.slow
def test_the_check_passes_on_a_small_checkpoint_and_writes_its_report(tmp_path, capsys):
    torch.manual_seed(0)
    # Twelve narrow blocks: the config's out_indices (blocks 4, 6, 8, 12) exist, at a tiny width.
    config = GPAConfig(**tiny_kwargs(num_channels=3, num_hidden_layers=12))
    GPAForPreTraining(config).save_pretrained(tmp_path / "gpa")
    output = tmp_path / "report"
    argv = ["--model_name_or_path", str(tmp_path / "gpa"), "--crop_size", "56", "--work_dir", str(tmp_path / "work")]
    assert check_mmseg_loading.main(argv + ["--output", str(output)]) == 0
    result = json.loads(output.with_suffix(".json").read_text())
    assert result["passed"] and result["keys"]["missing"] == [] and result["settings"]["img_size"] == [56, 56]
    assert [(row["block"], row["shape"]) for row in result["feature_maps"]] == [
        (block, [1, 32, 14, 14]) for block in (4, 6, 8, 12)
    ]
    assert result["layer_norm_eps"] == {"ours": 1e-12, "mmsegmentation": 1e-6}
    report = output.with_suffix(".md").read_text()
    assert report.startswith("# Our weights in mmsegmentation's MAE backbone") and "passed: tolerance" in report
    assert report.strip() in capsys.readouterr().out
