"""The MAE-vs-GPA Fashion-MNIST benchmark at a tiny size: every arm runs, results are cached and reported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.measuring import fashion_mnist as benchmark

PROGRAM = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark_fashion_mnist.py"

TINY = ["--quick", "--train_samples", "48", "--test_samples", "24", "--epochs", "1", "--batch_size", "16"]
TINY += ["--hidden_size", "16", "--num_heads", "2", "--decoder_hidden_size", "16", "--probe_epochs", "2"]
TINY += ["--seeds", "0", "--threads", "1"]
# The GPU machines have neither `datasets` nor `evaluate`: the runner makes importing them fail, then runs the script.
WITHOUT_DATASETS_OR_EVALUATE = """
import runpy, sys

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("datasets", "evaluate"):
            raise ImportError(name)

sys.meta_path.insert(0, Missing())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    results = benchmark.main(["--work_dir", str(work / "work"), "--results_prefix", str(work / "fm")] + TINY)
    return work, results


@pytest.mark.slow
def test_every_arm_and_reference_runs_on_both_datasets(finished):
    work, results = finished
    ran = {(r["dataset"], r["arm"]) for r in results}
    assert ran == {(d, a) for d in benchmark.DATASETS for a in (*benchmark.ARMS, *benchmark.REFERENCES)}
    for result in results:
        accuracies = [v for k, v in result.items() if k.startswith(("knn_", "linear_"))]
        assert accuracies and all(0.0 <= v <= 1.0 for v in accuracies)
    few_shot = [r["fewshot"] for r in results if r["arm"] == "gpa_pretrained_fewshot"]
    assert all(0 <= f["layer"] < 2 and f["head"] in (0, 1, None) for f in few_shot)
    assert all(f["recall"] <= f["recall_ceiling"] + 1e-6 and f["num_tied_best"] >= 1 for f in few_shot)
    mae = next(r for r in results if r["arm"] == "mae" and r["dataset"] == "cluttered")
    # MAE's masks are uniform: their object recall is the garment's share of the patches, up to sampling noise.
    assert mae["mask_object_recall"] == pytest.approx(mae["object_fraction"], abs=0.08)


def test_garment_masked_share_follows_from_recall_and_garment_share():
    # 49 patches, mask ratio 0.75: k = 49 - int(49 * 0.25) = 37. Recall 0.2 means 7.4 garment patches per mask on
    # average; a garment share of 0.2 means 9.8 garment patches per image: 7.4 / 9.8 of the garment is masked.
    result = {"mask_object_recall": 0.2, "object_fraction": 0.2}
    assert benchmark.garment_masked_share(result, 0.75) == pytest.approx(7.4 / 9.8)
    # Uniform masks (recall = garment share) hide k / n of the garment.
    assert benchmark.garment_masked_share({"mask_object_recall": 0.13, "object_fraction": 0.13}, 0.75) == (
        pytest.approx(37 / 49)
    )
    reference = {"knn_pixels": 0.5}
    assert benchmark.garment_masked_share(reference, 0.75) is None
    assert benchmark.with_garment_masked([reference, result], 0.75) == [
        reference,
        result | {"garment_masked": pytest.approx(7.4 / 9.8)},
    ]


@pytest.mark.slow
def test_report_has_both_tables_and_the_command(finished):
    work, _ = finished
    report = (work / "fm.md").read_text()
    assert "## Plain Fashion-MNIST" in report and "## Cluttered Fashion-MNIST" in report
    assert "--train_samples 48" in report and "torch " in report
    assert report.count("| MAE: random masking | – |") == 2
    assert report.count("| GPA, self teacher, no MAM | ours |") == 2 and "| arm | setting | k-NN CLS |" in report
    assert "garment masked" in report and "*Setting*: the GPA settings table of docs/model.md" in report
    payload = json.loads((work / "fm.json").read_text())
    assert set(payload["summary"]) == {"plain", "cluttered"}
    assert payload["summary"]["plain"]["mae"]["seeds"] == [0]


@pytest.mark.slow
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
    other = benchmark.Settings(background_strength=0.5, background_blur=0.0, garment_scale_max=1.0)
    assert base.key("plain") == other.key("plain")
    assert base.key("cluttered") != other.key("cluttered")


def test_garment_scale_sets_the_garment_size_of_the_cluttered_data(tmp_path):
    sizes = {}
    for low, high in ((0.4, 0.4), (1.0, 1.0)):
        settings = benchmark.Settings(train_samples=16, test_samples=8, garment_scale_min=low, garment_scale_max=high)
        masks = benchmark.load_arrays("cluttered", settings, tmp_path)["train_mask"]
        sizes[high] = masks.float().mean().item()
    # Garment area scales with the square of its side: (0.4 / 1.0)^2 = 0.16, up to resampling of the outline.
    assert sizes[0.4] / sizes[1.0] == pytest.approx(0.16, rel=0.15)


@pytest.mark.parametrize("low, high", [(1.0, 0.5), (0.0, 1.0), (1.0, 2.5)])
def test_an_impossible_garment_size_is_refused_before_any_work(tmp_path, capsys, low, high):
    argv = ["--work_dir", str(tmp_path), "--garment_scale_min", str(low), "--garment_scale_max", str(high)]
    with pytest.raises(SystemExit):
        benchmark.parse_args(argv)
    assert "must satisfy 0 < min <= max <= 2" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_runs_without_datasets_or_evaluate_to_the_same_numbers(finished, tmp_path):
    _, results = finished
    arms = ["mae", "gpa_pretrained_fewshot"]
    prefix = tmp_path / "fm"
    command = [sys.executable, "-c", WITHOUT_DATASETS_OR_EVALUATE, str(PROGRAM)]
    command += ["--work_dir", str(tmp_path / "work"), "--results_prefix", str(prefix), "--datasets", "cluttered"]
    completed = subprocess.run(command + ["--arms", *arms] + TINY, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    runs = json.loads(prefix.with_suffix(".json").read_text())["runs"]
    assert {run["arm"] for run in runs} == {*arms, *benchmark.REFERENCES}
    measured = ("knn_", "linear_", "mask_object_recall", "object_fraction", "loss_")
    for run in runs:
        expected = next(r for r in results if (r["dataset"], r["arm"]) == ("cluttered", run["arm"]))
        assert {k: v for k, v in run.items() if k.startswith(measured)} == pytest.approx(
            {k: v for k, v in expected.items() if k.startswith(measured)}, abs=1e-6
        )
        assert run.get("fewshot") == expected.get("fewshot")


@pytest.mark.slow
def test_worker_processes_give_the_same_results_and_one_report(finished, tmp_path):
    _, results = finished
    prefix = tmp_path / "fm"
    parallel = benchmark.main(
        ["--work_dir", str(tmp_path / "work"), "--results_prefix", str(prefix), "--workers", "2"] + TINY
    )
    finished_runs = list((tmp_path / "work").glob("runs-*/*/*/seed0/result.json"))
    assert len(finished_runs) == len(results) == len(parallel)
    measured = ("knn_", "linear_", "mask_object_recall", "loss_")
    for run in parallel:
        expected = next(r for r in results if (r["dataset"], r["arm"]) == (run["dataset"], run["arm"]))
        assert {k: v for k, v in run.items() if k.startswith(measured)} == pytest.approx(
            {k: v for k, v in expected.items() if k.startswith(measured)}, abs=1e-6
        )
    assert "2 worker process(es) of 1 thread(s)" in prefix.with_suffix(".md").read_text()


TWO_EPOCHS = TINY + ["--datasets", "plain", "--arms", "gpa_self_mam", "--epochs", "2", "--no_report"]


@pytest.mark.slow
def test_a_run_stopped_by_the_time_budget_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path, capsys):
    whole = benchmark.main(["--work_dir", str(tmp_path / "whole")] + TWO_EPOCHS)
    work = tmp_path / "stopped"
    stopped = benchmark.main(["--work_dir", str(work), "--time_budget_minutes", "0"] + TWO_EPOCHS)
    assert [r["arm"] for r in stopped] == list(benchmark.REFERENCES)
    assert "time budget reached after epoch 1/2" in capsys.readouterr().out
    settings = benchmark.parse_args(["--work_dir", str(work)] + TWO_EPOCHS).settings
    run = benchmark.run_dir(work, settings, "plain", "gpa_self_mam", 0)
    state = torch.load(run / benchmark.PRETRAIN_STATE, weights_only=True)
    # 48 images in batches of 16: 3 steps an epoch.
    assert state["epoch"] == 1 and state["losses"].shape == (3,) and state["masks"].shape == (3 * 16, 49)
    assert not (run / "result.json").exists()

    resumed = benchmark.main(["--work_dir", str(work)] + TWO_EPOCHS)
    assert "resuming after epoch 1/2" in capsys.readouterr().out
    assert not (run / benchmark.PRETRAIN_STATE).exists()
    expected, got = whole[-1], resumed[-1]
    assert got["steps"] == expected["steps"] == 6
    assert {k: v for k, v in got.items() if k != "pretrain_seconds"} == {
        k: v for k, v in expected.items() if k != "pretrain_seconds"
    }
    trained = benchmark.load_encoder(str(run / "checkpoint")).state_dict()
    reference = benchmark.run_dir(tmp_path / "whole", settings, "plain", "gpa_self_mam", 0) / "checkpoint"
    for name, tensor in benchmark.load_encoder(str(reference)).state_dict().items():
        torch.testing.assert_close(trained[name], tensor, rtol=0, atol=0)


@pytest.mark.slow
def test_worker_processes_stop_at_the_time_budget_and_keep_their_state(tmp_path):
    work = tmp_path / "work"
    argv = ["--work_dir", str(work), "--workers", "2", "--time_budget_minutes", "0", *TWO_EPOCHS, "--seeds", "0", "1"]
    results = benchmark.main(argv)
    assert sorted(r["arm"] for r in results) == sorted(benchmark.REFERENCES * 2)
    arm = work.glob(f"runs-*/plain/gpa_self_mam/*/{benchmark.PRETRAIN_STATE}")
    assert sorted(path.parent.name for path in arm) == ["seed0", "seed1"]
    assert not list(work.glob("runs-*/plain/gpa_self_mam/*/result.json"))


def test_a_negative_time_budget_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--work_dir", str(tmp_path), "--time_budget_minutes", "-1"])
    assert "--time_budget_minutes=-1.0 must be at least 0." in capsys.readouterr().err


@pytest.mark.slow
def test_checkpoints_carry_an_image_processor_that_normalises_as_the_benchmark(finished):
    from PIL import Image

    from modeling_gpa.data.image_inputs import ImageSettings

    work, _ = finished
    settings = benchmark.parse_args(["--work_dir", str(work)] + TINY).settings
    for dataset in benchmark.DATASETS:
        arrays = benchmark.load_arrays(dataset, settings, work / "work")
        # The benchmark's images are 8-bit: its statistics must map them back onto whole grey levels.
        grey = (arrays["train_x"][:4, 0] * arrays["pixel_std"] + arrays["pixel_mean"]) * 255
        assert (grey - grey.round()).abs().max() < 1e-3
        images = [Image.fromarray(level.round().clamp(0, 255).to(torch.uint8).numpy()) for level in grey]
        for name in ("mae", "random_init"):
            checkpoint = benchmark.run_dir(work / "work", settings, dataset, name, 0) / "checkpoint"
            config = benchmark.GPAConfig.from_pretrained(checkpoint)
            pixel_values = ImageSettings.from_pretrained(str(checkpoint), config).to_pixel_values(images)
            torch.testing.assert_close(pixel_values, arrays["train_x"][:4], atol=1e-5, rtol=0)


def test_without_output_the_summary_goes_under_outputs_not_over_the_committed_one(tmp_path):
    root = Path(benchmark.__file__).resolve().parents[2]
    args = benchmark.parse_args(["--work_dir", str(tmp_path), "--quick"])
    assert Path(args.results_prefix) == root / "outputs" / "benchmarks" / "fashion_mnist"
    chosen = benchmark.parse_args(["--work_dir", str(tmp_path), "--output", "benchmarks/fashion_mnist"])
    assert chosen.results_prefix == "benchmarks/fashion_mnist"


def test_flipped_batches_cover_the_images_once_and_flip_each_mask_with_its_image():
    images = torch.arange(10 * 2 * 3, dtype=torch.float32).view(10, 1, 2, 3)
    masks = images[:, 0] > 20
    batches = list(benchmark.flipped_batches(images, masks, 4, torch.Generator().manual_seed(0)))
    assert [batch.shape for batch, _ in batches] == [(4, 1, 2, 3)] * 2
    seen = []
    flipped = 0
    for batch, batch_masks in batches:
        for image, mask in zip(batch, batch_masks, strict=True):
            index = int(image.min()) // 6
            as_drawn = torch.equal(image, images[index])
            assert as_drawn or torch.equal(image, images[index].flip(-1))
            assert torch.equal(mask, masks[index] if as_drawn else masks[index].flip(-1))
            flipped += not as_drawn
            seen.append(index)
    assert len(set(seen)) == 8 and 0 < flipped < 8
