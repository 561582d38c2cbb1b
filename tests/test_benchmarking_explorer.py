import numpy as np
from PIL import Image

from benchmarks.measuring import explorer as benchmark_explorer


def test_the_benchmark_s_images_and_object_mask_cover_half_the_photo(tmp_path):
    images, object_mask = benchmark_explorer.write_images(str(tmp_path))
    assert [Image.open(path).size for path in images] == [(512, 512), (451, 300)]
    share = (np.asarray(Image.open(object_mask)) > 127).mean()
    assert 0.4 < share <= 0.5


def test_the_report_has_a_row_per_change_and_the_start_up_of_each_checkpoint():
    changes = {"training progress": {"median_s": 0.123, "max_s": 0.2}, "head": {"median_s": 0.3, "max_s": 0.41}}
    results = {
        "command": "python benchmarks/benchmark_explorer.py",
        "date": "2026-01-01",
        "machine": "x86_64",
        "versions": "torch",
        "results": [{"checkpoint": "tiny", "startup_s": 7.25, "first_answer_s": 0.5, "changes": changes}],
    }
    text = benchmark_explorer.markdown(results)
    assert "## tiny" in text and "Start-up 7.2 s; first answer 0.50 s." in text
    assert "| training progress | 0.12 | 0.20 |" in text and "| head | 0.30 | 0.41 |" in text
