import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.measuring import speed

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark_speed.py"
ARMS = [
    "mae",
    "gpa-self",
    "gpa-self-mam",
    "gpa-ema",
    "gpa-ema-mam",
    "gpa-pretrained",
    "gpa-pretrained-mam",
    "gpa-pretrained-16px",
    "gpa-pretrained-16px-mam",
]
STRATEGY_ARMS = ["block", "cls-attention-pretrained", "hpm"]
# Runs the script as __main__, then checks that the GPU machine's missing packages were never imported.
RUNNER = """
import runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
missing = [name for name in ("datasets", "evaluate") if name in sys.modules]
assert not missing, f"benchmark imported {missing}"
"""


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    output = tmp_path_factory.mktemp("speed") / "speed_cpu"
    command = [sys.executable, "-c", RUNNER, str(SCRIPT), "--config", "tiny", "--quick", "--threads", "1"]
    completed = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(output.with_suffix(".json").read_text()), output.with_suffix(".md").read_text()


@pytest.mark.slow
def test_quick_run_reports_every_arm_with_positive_ratios(quick_results):
    results, _ = quick_results
    rows = {row["arm"]: row for row in results["steps"]}
    assert list(rows) == ARMS + STRATEGY_ARMS
    for row in rows.values():
        assert row["step_ms"] > 0 and row["images_per_s"] > 0 and row["ratio_to_mae"] > 0
        assert row["resident_mib"] > 0 and row["step_peak_mib"] > 0
    assert rows["mae"]["flops_ratio"] == 1.0 and rows["mae"]["mask_share"] is None
    for name in ARMS[1:]:
        assert rows[name]["flops_ratio"] > 1.0 and rows[name]["measured_over_floor"] > 0
        assert 0 < rows[name]["mask_share"] < 1
    # The exact teachers cost the same FLOPs; the cheaper one less; the EMA copy adds resident weights.
    assert rows["gpa-self"]["flops_per_image"] == rows["gpa-pretrained"]["flops_per_image"]
    assert rows["gpa-pretrained-16px"]["flops_ratio"] < rows["gpa-pretrained"]["flops_ratio"]
    assert rows["gpa-ema"]["resident_mib"] > rows["gpa-self"]["resident_mib"]
    # Block masks cost MAE's FLOPs, the CLS score the exact teacher's; HPM's step is measured, its FLOPs not modelled.
    assert rows["block"]["flops_ratio"] == 1.0 and rows["block"]["mask_share"] is None
    assert rows["cls-attention-pretrained"]["flops_per_image"] == rows["gpa-pretrained"]["flops_per_image"]
    assert rows["hpm"]["flops_ratio"] is None and rows["hpm"]["ratio_to_mae"] > 0
    assert rows["hpm"]["resident_mib"] > rows["gpa-ema"]["resident_mib"]


@pytest.mark.slow
def test_quick_run_reports_scoring_memory_and_targets(quick_results):
    results, markdown = quick_results
    compute = {row["route"]: row for row in results["compute_gpa"]["rows"]}
    assert set(compute) == {"naive", "exact", "cheap"}
    assert all(row["speedup_vs_naive"] > 0 for row in compute.values())
    assert compute["cheap"]["flops_speedup_vs_naive"] > compute["exact"]["flops_speedup_vs_naive"] > 1
    assert results["compute_gpa"]["naive_vs_softmax_max_rel_diff"] < 1e-4
    assert [row["n"] for row in results["score"]] == [196, 784, 3136]
    for row in results["score"]:
        # The logits route never builds anything near the n x n matrix; the matrix routes do.
        assert row["linear_logits_largest_tensor"] < row["n_by_n_elements"] / 3
        assert row["matrix_logits_largest_tensor"] >= row["n_by_n_elements"]
        assert row["linear_vs_matrix_max_rel_diff"] < 1e-4
    assert len(results["targets"]) == 6 and all(isinstance(t["met"], bool) for t in results["targets"])
    assert results["versions"]["torch"] and results["machine"]["cpu"]
    assert "--quick" in results["command"]
    assert "| gpa-pretrained-16px-mam |" in markdown and "## Targets" in markdown


def test_bad_arguments_give_one_line_errors(capsys):
    for argv, message in (
        (["--config", "vit-b16", "--device", "cpu"], "only runs with --quick"),
        (["--teacher_image_size", "15"], "gpa_teacher_image_size=15 is invalid"),
        (["--device", "tpu"], "use cpu or cuda"),
        (["--config", "vit-b16", "--quick", "--agreement_steps", "5"], "needs --config tiny"),
    ):
        with pytest.raises(SystemExit):
            speed.parse_args(argv)
        assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Fashion-MNIST not installed")
def test_agreement_of_the_cheaper_teacher_on_fashion_mnist():
    args = speed.parse_args(["--agreement_steps", "2", "--agreement_images", "32"])
    agreement = speed.measure_agreement(args)
    assert agreement["patches"] == 49 and agreement["hard_patches"] == 18
    rows = [row for row in agreement["rows"] if row["teacher"] == "trained"]
    assert [row["teacher_image_size"] for row in rows] == [8, 12, 16, 20, 24, 28]
    # The last row is the exact teacher against itself.
    assert rows[-1]["overlap_mean"] == rows[-1]["overlap_p10"] == 1.0 and rows[-1]["teacher_tokens"] == 49
    for row in agreement["rows"]:
        assert 0 <= row["overlap_p10"] <= row["overlap_median"] <= 1 and 0 <= row["overlap_mean"] <= 1
        assert 0 <= row["hard_on_garment"] <= 1
    assert 0.2 < agreement["garment_share"] < 0.9


def test_without_output_the_results_go_under_outputs_not_over_the_committed_ones():
    assert speed.parse_args(["--quick"]).output == "outputs/benchmarks/speed_cpu"
    assert speed.parse_args(["--quick", "--output", "benchmarks/speed_cpu"]).output == "benchmarks/speed_cpu"
