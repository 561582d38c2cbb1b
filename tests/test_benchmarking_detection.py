import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchmark_detection as detection  # noqa: E402


@pytest.mark.slow
def test_a_quick_run_trains_the_detector_with_falling_loss_and_writes_its_box_map(tmp_path):
    output = tmp_path / "detection"
    result = detection.main(["--quick", "--work_dir", str(tmp_path / "data"), "--output", str(output)])
    assert (result["steps"], result["train_images"], result["test_images"]) == (30, 256, 64)
    assert result["loss_last"] < 0.8 * result["loss_first"]
    assert 0.0 <= result["map_75"] <= result["map_50"] <= 1.0 and 0.0 <= result["map"] <= 1.0
    assert json.loads(output.with_suffix(".json").read_text()) == result
    report = output.with_suffix(".md").read_text()
    assert "benchmark_detection.py --quick" in report and f"- map_50: {result['map_50']:.4g}" in report
