"""The data benchmark: its data, its measurements (each on a small case), the resumable run and the report."""

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchmark_data  # noqa: E402

from benchmarks.measuring.data import (  # noqa: E402
    Settings,
    compare_one_worker,
    first_step_arguments,
    first_step_in_this_process,
    prepared_data,
)


def test_the_data_is_tiny_jpegs_in_class_folders_with_their_shards(tmp_path):
    paths = prepared_data(Settings(work_dir=str(tmp_path)), 130)
    files = sorted(paths["imagefolder"].rglob("*.jpg"))
    assert len(files) == 130 and len({f.parent.name for f in files}) == 10
    with Image.open(files[0]) as image:
        assert image.size == (32, 32) and files[0].stat().st_size < 2000
    assert len(list((paths["parquet"] / "data").glob("train-*.parquet"))) == 1
    assert len(list((paths["webdataset"] / "data").glob("train-*.tar"))) == 1


@pytest.mark.slow
def test_first_step_reports_its_time_and_memory_for_a_stream_and_a_folder(tmp_path):
    paths = prepared_data(Settings(work_dir=str(tmp_path)), 128)
    for shard_format, mode in (("parquet", "streaming"), ("imagefolder", "map")):
        args = first_step_arguments(paths[shard_format], shard_format, mode, tmp_path / "run", tmp_path / "cache")
        reached = first_step_in_this_process(args)
        assert reached["time"] > 0 and reached["peak_rss_mb"] > 100


@pytest.mark.slow
def test_one_worker_is_measured_on_the_same_images_both_ways(tmp_path):
    """Enough images that the work measured (about 0.2 s) stands above a worker's start-up noise."""
    paths = prepared_data(Settings(work_dir=str(tmp_path)), 768)
    measured = compare_one_worker(paths["imagefolder"], paths["parquet"], 768, Settings(batch_size=16), 32)
    for mode in ("map", "streaming"):
        assert measured[mode]["worker_ms_per_image"] > 0 and measured[mode]["images_per_s"] > 0
    assert measured["ratio"] == measured["streaming"]["worker_ms_per_image"] / measured["map"]["worker_ms_per_image"]


def test_a_run_resumes_from_its_kept_measurements_and_writes_the_report(tmp_path):
    """Every measurement already kept: nothing is measured again, and the report reads the targets off them."""
    work = tmp_path / "work"
    work.mkdir()
    kept = {}
    for size, seconds, memory in ((200, 4.0, 500.0), (400, 4.4, 520.0)):
        for shard_format in ("parquet",):
            for key in ("map/first_start", "map/restart", "streaming/first_start"):
                kept[f"{size}/{shard_format}/{key}"] = {"first_step_s": seconds, "cpu_s": 3.0, "peak_rss_mb": memory}
    one = {"map": {"worker_ms_per_image": 1.0, "images_per_s": 900.0}}
    one["streaming"], one["ratio"] = {"worker_ms_per_image": 1.1, "images_per_s": 850.0}, 1.1
    kept["one_worker/tiny"] = one
    (work / "measurements.json").write_text(json.dumps(kept))
    output = tmp_path / "data_cpu"
    results = benchmark_data.main(
        ["--sizes", "200", "400", "--formats", "parquet", "--photo_images", "0", "--work_dir", str(work)]
        + ["--output", str(output)]
    )
    assert results["measurements"] == kept
    targets = results["targets"]
    assert targets["streaming parquet: first step at 400 / 200 images"]["met"]
    assert targets["one streaming worker / one map-style worker, tiny"] == {"ratio": 1.1, "met": True}
    report = output.with_suffix(".md").read_text()
    assert "| 400 | parquet | 4.4 s (3.0 s CPU) | 4.4 s (3.0 s CPU) | 4.4 s (3.0 s CPU) | 520 / 520 |" in report
    assert "(met)" in report and json.loads(output.with_suffix(".json").read_text())["settings"]["sizes"] == [200, 400]
