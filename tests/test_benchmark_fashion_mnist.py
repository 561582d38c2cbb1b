"""The MAE-vs-GPA Fashion-MNIST benchmark at a tiny size: every arm runs, results are cached and reported."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "run_scripts"))

import benchmark_fashion_mnist as benchmark  # noqa: E402

TINY = ["--quick", "--train_samples", "48", "--test_samples", "24", "--epochs", "1", "--batch_size", "16"]
TINY += ["--hidden_size", "16", "--num_heads", "2", "--decoder_hidden_size", "16", "--probe_epochs", "2"]
TINY += ["--seeds", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    results = benchmark.main(["--work_dir", str(work / "work"), "--results_prefix", str(work / "fm")] + TINY)
    return work, results


def test_every_arm_and_reference_runs_on_both_datasets(finished):
    work, results = finished
    ran = {(r["dataset"], r["arm"]) for r in results}
    assert ran == {(d, a) for d in benchmark.DATASETS for a in (*benchmark.ARMS, *benchmark.REFERENCES)}
    for result in results:
        accuracies = [v for k, v in result.items() if k.startswith(("knn_", "linear_"))]
        assert accuracies and all(0.0 <= v <= 1.0 for v in accuracies)
    few_shot = [r["fewshot"] for r in results if r["arm"] == "gpa_pretrained_fewshot"]
    assert all(0 <= f["layer"] < 2 and f["head"] in (0, 1, None) for f in few_shot)
    mae = next(r for r in results if r["arm"] == "mae" and r["dataset"] == "cluttered")
    # MAE's masks are uniform: their object recall is the garment's share of the patches, up to sampling noise.
    assert mae["mask_object_recall"] == pytest.approx(mae["object_fraction"], abs=0.08)


def test_report_has_both_tables_and_the_command(finished):
    work, _ = finished
    report = (work / "fm.md").read_text()
    assert "## Plain Fashion-MNIST" in report and "## Cluttered Fashion-MNIST" in report
    assert "--train_samples 48" in report and "torch " in report
    assert report.count("| MAE: random masking |") == 2
    payload = json.loads((work / "fm.json").read_text())
    assert set(payload["summary"]) == {"plain", "cluttered"}
    assert payload["summary"]["plain"]["mae"]["seeds"] == [0]


def test_a_second_run_reuses_the_cached_results(finished):
    work, results = finished
    again = benchmark.main(["--work_dir", str(work / "work"), "--results_prefix", str(work / "again")] + TINY)
    assert again == results
    cached = benchmark.main(
        ["--work_dir", str(work / "work"), "--results_prefix", str(work / "r"), "--report_only"] + TINY
    )
    assert sorted(json.dumps(r, sort_keys=True) for r in cached) == sorted(
        json.dumps(r, sort_keys=True) for r in results
    )


def test_every_arm_starts_from_the_same_encoder():
    settings = benchmark.Settings(**benchmark.QUICK)
    mae = benchmark.initial_model("plain", settings, 3, gpa_prediction=False)
    gpa = benchmark.initial_model("plain", settings, 3, gpa_teacher="self", gpa_prediction=True)
    for name, tensor in mae.vit.state_dict().items():
        torch.testing.assert_close(gpa.vit.state_dict()[name], tensor)


def test_clutter_knobs_do_not_change_the_plain_runs():
    base = benchmark.Settings()
    other = benchmark.Settings(background_strength=0.5, background_blur=0.0)
    assert base.key("plain") == other.key("plain")
    assert base.key("cluttered") != other.key("cluttered")
