"""The settings report reads every cached benchmark setting and puts one arm beside both references."""

import json

import numpy as np
import pytest
from matplotlib.container import BarContainer

from benchmarks.measuring import fashion_mnist as benchmark
from benchmarks.measuring import settings_report as report

TINY = ["--quick", "--train_samples", "48", "--test_samples", "24", "--batch_size", "16", "--hidden_size", "16"]
TINY += ["--num_heads", "2", "--decoder_hidden_size", "16", "--probe_epochs", "2", "--threads", "1"]
TINY += ["--datasets", "cluttered", "--seeds", "0", "--no_report"]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("settings")
    benchmark.main(["--work_dir", str(work), "--epochs", "2", "--arms", "mae", *TINY])
    benchmark.main(["--work_dir", str(work), "--epochs", "1", "--arms", "mae", "gpa_self", *TINY])
    return work


@pytest.mark.slow
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
        assert row["arm"]["garment_masked"]["mean"] == pytest.approx(benchmark.garment_masked_share(arm, 0.75))
        (run,) = row["runs"]
        assert run["linear_mean"] == arm["linear_mean"]
        assert run["garment_masked"] == row["arm"]["garment_masked"]["mean"]
    table = (tmp_path / "report.md").read_text()
    assert "| epochs | arm | setting | k-NN CLS |" in table and "| margin | garment masked |" in table
    assert table.count("\n| 1 | MAE: random masking | – |") == 1
    assert table.count("\n| 1 | GPA, self teacher, no MAM | ours |") == 1
    assert "*Setting*: the GPA settings table of docs/model.md" in table
    assert table.count("\n| 2 |") == 1
    assert json.loads((tmp_path / "report.json").read_text())["varying"] == ["epochs"]
    assert (tmp_path / "report.png").stat().st_size > 10_000
    # Only the 1-epoch setting has two arms: one panel, two runs, too few for a correlation.
    assert "- epochs 1: too few runs (2 runs)" in table and "epochs 2:" not in table
    assert "![Per run" in table and (tmp_path / "report_runs.png").stat().st_size > 10_000


def test_a_work_dir_without_results_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no cached cluttered results for mae"):
        report.main(["--work_dir", str(tmp_path), "--output", str(tmp_path / "report")])


def test_the_chart_draws_one_std_over_seeds_and_none_for_a_single_seed():
    def stats(mean: float, std: float) -> dict:
        return {"mean": mean, "std": std}

    def row(seeds: list[int], std: float) -> dict:
        readouts = {key: stats(0.5, std) for key in report.READOUTS}
        return {
            "settings": {"epochs": len(seeds)},
            "arm_name": "mae",
            "arm": {**readouts, "linear_mean": stats(0.6, std), "seeds": seeds},
            "random_init": {**readouts, "knn_cls": stats(0.3, 0.02), "seeds": seeds},
            "raw_pixels": {"knn_pixels": stats(0.55, 0.0), "linear_pixels": stats(0.2, 0.0), "seeds": seeds},
        }

    figure = report.plot([row([0, 1, 2], 0.04), row([0], 0.0)], ["epochs"])
    linear, _, _, random_init = (item for item in figure.axes[0].containers if isinstance(item, BarContainer))
    assert [bar.get_height() for bar in linear] == pytest.approx([60.0, 60.0])
    (linear_spans,) = linear.errorbar.lines[2]
    drawn = [segment for segment in linear_spans.get_segments() if np.isfinite(segment).all() and segment.size]
    assert [segment[1, 1] - segment[0, 1] for segment in drawn] == pytest.approx([8.0])
    assert [bar.get_height() for bar in random_init] == pytest.approx([50.0, 50.0])
    assert report.best_readout(row([0], 0.0)["random_init"], report.READOUTS) == stats(0.5, 0.0)


def test_the_runs_figure_puts_every_run_at_its_hidden_share_and_accuracy():
    def row(arm: str, epochs: int, points: list[tuple[float, float]]) -> dict:
        runs = [{"seed": s, "garment_masked": x, "linear_mean": y, "knn_mean": y} for s, (x, y) in enumerate(points)]
        return {"settings": {"epochs": epochs}, "arm_name": arm, "runs": runs}

    rows = [
        row("mae", 80, [(0.755, 0.65), (0.755, 0.64)]),
        row("gpa_pretrained_fewshot", 80, [(0.95, 0.55)]),
        row("mae", 40, [(0.755, 0.60)]),
    ]
    groups = report.run_groups(rows, ["epochs"])
    assert list(groups) == ["epochs 80"]
    # Hidden shares 75.5, 75.5, 95 and accuracies 65, 64, 55: the covariance is negative, r computed by hand.
    hidden, accuracy = np.array([0.755, 0.755, 0.95]), np.array([0.65, 0.64, 0.55])
    dx, dy = hidden - hidden.mean(), accuracy - accuracy.mean()
    expected = (dx * dy).sum() / np.sqrt((dx**2).sum() * (dy**2).sum())
    assert report.correlation(groups["epochs 80"]) == pytest.approx(expected) and expected < -0.99
    (panel,) = report.plot_runs(groups).axes
    drawn = np.concatenate([collection.get_offsets() for collection in panel.collections])
    np.testing.assert_allclose(drawn, [[75.5, 65.0], [75.5, 64.0], [95.0, 55.0]])
    assert panel.get_title() == f"epochs 80: r = {expected:.2f}"
