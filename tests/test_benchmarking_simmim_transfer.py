import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchmark_simmim_transfer as simmim_transfer  # noqa: E402


@pytest.mark.slow
def test_quick_benchmark_writes_the_table_and_resumes_from_its_cache(tmp_path):
    argv = ["--quick", "--work_dir", str(tmp_path / "work"), "--output", str(tmp_path / "report"), "--seeds", "0"]
    argv += ["--datasets", "cluttered", "--train_samples", "128", "--test_samples", "64"]
    summary = simmim_transfer.main(argv)
    keys = {
        "cluttered/vit/simmim_random",
        "cluttered/vit/simmim_gpa",
        "cluttered/vit/random_init",
        "cluttered/swin/simmim_random",
        "cluttered/swin/simmim_gpa",
        "cluttered/swin/random_init",
        "cluttered/pixels/raw_pixels",
    }
    assert set(summary) == keys
    for key in keys:
        assert 0.0 <= summary[key]["knn"]["mean"] <= 1.0 and summary[key]["seeds"] == [0]
    # Both students see the same masks of an arm: same mask generator seed, same teacher, same images.
    for arm in ("simmim_random", "simmim_gpa"):
        recall = [summary[f"cluttered/{s}/{arm}"]["mask_object_recall"]["mean"] for s in ("vit", "swin")]
        assert recall[0] == recall[1]
    report = json.loads((tmp_path / "report.json").read_text())
    runs = {(r["student"], r["arm"]): r for r in report["runs"]}
    assert runs[("vit", "simmim_gpa")]["fewshot"]["layer"] in range(2)
    assert "| cluttered | swin | simmim_gpa | 0 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    # A second run finds every result cached and writes the same table.
    result_files = sorted((tmp_path / "work").rglob("result.json"))
    stamps = [path.stat().st_mtime_ns for path in result_files]
    assert simmim_transfer.main(argv) == summary
    assert [path.stat().st_mtime_ns for path in result_files] == stamps
