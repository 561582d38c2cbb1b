"""The settings report reads every cached benchmark setting and puts one arm beside both references."""

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "run_scripts"
sys.path.insert(0, str(SCRIPTS))

import benchmark_fashion_mnist as benchmark  # noqa: E402
import benchmark_settings_report as report  # noqa: E402

TINY = ["--quick", "--train_samples", "48", "--test_samples", "24", "--batch_size", "16", "--hidden_size", "16"]
TINY += ["--num_heads", "2", "--decoder_hidden_size", "16", "--probe_epochs", "2", "--threads", "1"]
TINY += ["--datasets", "cluttered", "--seeds", "0", "--no_report"]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("settings")
    benchmark.main(["--work_dir", str(work), "--epochs", "2", "--arms", "mae", *TINY])
    benchmark.main(["--work_dir", str(work), "--epochs", "1", "--arms", "mae", "gpa_self", *TINY])
    return work


def test_one_row_per_setting_with_the_cached_numbers_and_the_margin(work_dir, tmp_path):
    rows = report.main(["--work_dir", str(work_dir), "--arms", "mae", "gpa_self", "--output", str(tmp_path / "report")])
    assert [(row["settings"]["epochs"], row["arm_name"]) for row in rows] == [(1, "mae"), (1, "gpa_self"), (2, "mae")]
    assert report.varying_fields(rows) == ["epochs"]
    readouts = ("knn_cls", "knn_mean", "linear_cls", "linear_mean")
    for row in rows:
        runs = work_dir / f"runs-{benchmark.Settings(**row['settings']).key('cluttered')}" / "cluttered"
        arm, random_init, raw = (
            json.loads((runs / name / "seed0" / "result.json").read_text())
            for name in (row["arm_name"], "random_init", "raw_pixels")
        )
        assert row["arm"]["linear_mean"]["mean"] == arm["linear_mean"]
        best_reference = max(*(random_init[key] for key in readouts), raw["knn_pixels"], raw["linear_pixels"])
        assert report.margin(row) == pytest.approx(max(arm[key] for key in readouts) - best_reference)
    table = (tmp_path / "report.md").read_text()
    assert "| epochs | arm | k-NN CLS |" in table
    assert table.count("\n| 1 | MAE") == 1 and table.count("\n| 1 | GPA, self teacher, no MAM |") == 1
    assert table.count("\n| 2 |") == 1
    assert json.loads((tmp_path / "report.json").read_text())["varying"] == ["epochs"]
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_a_work_dir_without_results_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no cached cluttered results for mae"):
        report.main(["--work_dir", str(tmp_path), "--output", str(tmp_path / "report")])
