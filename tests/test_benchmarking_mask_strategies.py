import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark_mask_strategies.py"


@pytest.mark.slow
def test_a_tiny_run_reports_every_strategy_and_a_second_run_reads_the_cache(tmp_path):
    size = ["--quick", "--train_samples", "256", "--test_samples", "128", "--epochs", "1", "--probe_epochs", "2"]
    command = [sys.executable, str(SCRIPT), "--work_dir", str(tmp_path / "work"), "--output", str(tmp_path / "report")]
    first = subprocess.run(command + size, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["summary"]) == {"mae", "block", "cls_attention", "gpa", "hpm"}
    mae = report["summary"]["mae"]
    assert mae["time_vs_mae"]["mean"] == 1.0 and 0.74 < mae["garment_masked"]["mean"] < 0.77
    for row in report["summary"].values():
        assert 0.0 <= row["knn_mean"]["mean"] <= 1.0 and row["time_vs_mae"]["mean"] > 0
    second = subprocess.run(command + size, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "epoch 1/1" not in second.stdout
    assert (tmp_path / "report.md").read_text().count("| ") > 5
