import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchmark_segmentation as segmentation  # noqa: E402


@pytest.mark.slow
def test_a_quick_run_fine_tunes_every_arm_writes_the_table_and_resumes_from_its_cache(tmp_path):
    argv = ["--quick", "--work_dir", str(tmp_path / "work"), "--output", str(tmp_path / "segmentation")]
    summary = segmentation.main(argv)
    assert list(summary) == ["random_init", "mae", "gpa_pretrained_last"]
    for row in summary.values():
        assert 0.0 <= row["mean_iou"] <= 1.0 and 0.0 <= row["overall_accuracy"] <= 1.0 and row["seeds"] == [0]
    saved = json.loads((tmp_path / "segmentation.json").read_text())
    runs = {run["arm"]: run for run in saved["runs"]}
    assert all(len(run["per_category_iou"]) == 11 for run in runs.values())
    timing = saved["meta"]["step_time"]
    assert timing["ratio"] == pytest.approx(timing["gpa_step_seconds"] / timing["beit_step_seconds"])
    report = (tmp_path / "segmentation.md").read_text()
    assert "| MAE: random masking |" in report and "ratio" in report
    # Every pretraining and fine-tuning is cached: a second run reads them and reports the same numbers.
    assert segmentation.main(argv) == summary
