"""The teacher-heads report repeats the benchmark's few-shot choice and scores every head on held-out images."""

import json

import pytest

from benchmarks.measuring import fashion_mnist as benchmark
from benchmarks.measuring import teacher_heads

SETTINGS = ["--quick", "--train_samples", "48", "--test_samples", "24", "--batch_size", "16", "--hidden_size", "16"]
SETTINGS += ["--num_heads", "2", "--decoder_hidden_size", "16", "--epochs", "1", "--probe_epochs", "2"]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("heads")
    flags = ["--threads", "1", "--datasets", "cluttered", "--seeds", "0", "--no_report"]
    benchmark.main(["--work_dir", str(work), "--arms", "gpa_pretrained_fewshot", *SETTINGS, *flags])
    return work


@pytest.mark.slow
def test_the_report_repeats_the_benchmarks_choice_and_bounds_every_head(work_dir, tmp_path):
    rows = teacher_heads.main(
        ["--work_dir", str(work_dir), "--seeds", "0", "--heldout", "20", "--output", str(tmp_path / "heads"), *SETTINGS]
    )
    assert [(row["teacher"], row["seed"]) for row in rows] == [("mae", 0), ("random_init", 0)]
    settings = benchmark.settings_from_args(teacher_heads.parse_args(["--work_dir", "w", "--output", "o", *SETTINGS]))
    runs = work_dir / f"runs-{settings.key('cluttered')}" / "cluttered"
    cached = json.loads((runs / "gpa_pretrained_fewshot" / "seed0" / "result.json").read_text())["fewshot"]
    mae = rows[0]
    assert (mae["fewshot"]["layer"], mae["fewshot"]["head"]) == (cached["layer"], cached["head"])
    assert mae["fewshot"]["recall"] == pytest.approx(cached["recall"])
    for row in rows:
        held = row["heldout"]
        assert held["num_images"] == 20
        assert held["chance"] <= held["ceiling"] + 1e-6
        every = [value for block in held["recall"] for value in block]
        assert max(every) == pytest.approx(held["best"], abs=1e-6) and held["best"] <= held["ceiling"] + 1e-6
        assert held["last_block_last_head"] == pytest.approx(held["recall"][-1][-2], abs=1e-6)
        assert row["fewshot"]["recall"] <= row["fewshot"]["ceiling"] + 1e-6
    table = (tmp_path / "heads.md").read_text()
    assert table.count("| MAE checkpoint") == 1 and table.count("| random-init encoder") == 1
    assert json.loads((tmp_path / "heads.json").read_text())["rows"] == json.loads(json.dumps(rows))


def test_no_cached_teachers_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no cached cluttered mae or random_init checkpoints"):
        teacher_heads.main(["--work_dir", str(tmp_path), "--output", str(tmp_path / "heads"), *SETTINGS])
