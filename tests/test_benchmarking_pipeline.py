import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchmark_pipeline  # noqa: E402

from benchmarks.measuring.pipeline import write_image_folder  # noqa: E402


def test_image_folder_is_imagenet_like(tmp_path):
    files = write_image_folder(tmp_path, 12)
    assert len(files) == 12 and len({Path(f).parent.name for f in files}) == 10
    for path in files:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert 400 <= image.width < 600 and 300 <= image.height < 450
    assert write_image_folder(tmp_path, 12) == files  # existing files are kept
    assert np.asarray(Image.open(files[0])).std() > 10  # a photo, not a flat image


@pytest.mark.slow
def test_quick_run_measures_all_three_parts_and_writes_the_report(tmp_path):
    output = tmp_path / "pipeline_cpu"
    argv = [
        "--quick",
        "--no_compile",
        "--arms",
        "mae",
        "--image_dir",
        str(tmp_path / "images"),
        "--output",
        str(output),
    ]
    results = benchmark_pipeline.main(argv)

    saved = json.loads(output.with_suffix(".json").read_text())
    assert saved["command"].endswith(" ".join(argv)) and saved["num_images"] == 512
    pipeline = saved["pipeline"]
    for name in ("torchvision_pipeline", "pil_pipeline", "float32_baseline"):
        assert pipeline[name]["worker_ms_per_image"] > 0 and pipeline[name]["loader_img_s"] > 0
    assert pipeline["bare_decode_crop_resize"]["worker_ms_per_image"] > 0
    assert "skipped" in pipeline["gpu_decode"]  # no CUDA device on the test machines
    # With device decoding the workers only read bytes and headers: far less CPU than decoding.
    workers_part = pipeline["device_decoding_workers"]["worker_ms_per_image"]
    assert 0 < workers_part < 0.5 * pipeline["torchvision_pipeline"]["worker_ms_per_image"]
    assert saved["end_to_end_device_decoding"]["mae/eager"] == {
        "ran": False,
        "error": pipeline["gpu_decode"]["skipped"],
    }
    # The float32 baseline does the same work plus float conversion and 4x the bytes: never cheaper per worker.
    assert pipeline["pil_vs_float32_speed"] > 1.0
    assert pipeline["pil_vs_bare_time"] > 0.8
    # The same crops, resized by torchvision's uint8 kernel instead of PIL's: never dearer per worker.
    assert pipeline["torchvision_vs_pil_speed"] > 1.0
    step, end_to_end = saved["step"]["mae/eager"], saved["end_to_end"]["mae/eager"]
    assert step["ran"] and step["img_s"] > 0
    assert end_to_end["ran"] and end_to_end["steady_steps"] == 12 - 3
    assert end_to_end["ratio_to_step"] == results["end_to_end"]["mae/eager"]["img_s"] / step["img_s"]
    report = output.with_suffix(".md").read_text()
    assert "float32 baseline" in report and "| mae/eager |" in report
    assert "torchvision pipeline runs" in report
