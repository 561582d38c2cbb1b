import importlib.util
import json
import os

import pytest
import torch
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.evaluation.mask_recall import format_mask_recall, masked_object_share, measure_mask_recall
from modeling_gpa.head_selection import attention_head_ranking, recall_ceiling, topk_object_share


def tiny_gpa(**overrides) -> GPAForPreTraining:
    torch.manual_seed(0)
    return GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_prediction=False, **overrides))).eval()


def garments(count: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright rectangles on a dark background and their (count, 49) object patches."""
    objects = torch.zeros(count, 7, 7, dtype=torch.bool)
    for index in range(count):
        objects[index, index % 3 : index % 3 + 4, 1 : 3 + index % 4] = True
    pixels = objects.float().repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1) * 2 - 1
    return pixels + 0.1 * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0)), objects.flatten(1)


def test_masked_object_share_by_hand():
    masked = torch.tensor([[True, True, False, False], [False, False, False, False]])
    objects = torch.tensor([[True, False, True, False], [True, True, True, True]])
    # 1 of 2 masked patches on the object; an empty mask scores 0.
    torch.testing.assert_close(masked_object_share(masked, objects), torch.tensor([0.5, 0.0]))


def test_every_measure_equals_its_definition():
    model = tiny_gpa(gpa_layer=1, gpa_head=2, hard_ratio_end=0.5)
    pixel_values, objects = garments()
    report = measure_mask_recall(model, pixel_values, objects, progress=(0.0, 1.0), batch_size=5)
    scores = model.compute_gpa(pixel_values)
    recall, precision = attention_head_ranking(model, pixel_values, objects, layer=1, head=2)
    assert (report.layer, report.head, report.num_masked, report.num_hard) == (1, 2, 37, 18)
    assert (report.topk_recall, report.average_precision) == pytest.approx((recall, precision))
    assert report.hard_recall == pytest.approx(topk_object_share(scores, objects, 18).mean().item())
    assert report.hard_ceiling == pytest.approx(recall_ceiling(objects, 18))
    assert report.object_coverage == pytest.approx(objects.float().mean().item())
    # At progress 0 (soft 0.5, rest random) and 1 (hard 0.5, rest random) every mask has 37 patches.
    assert len(report.schedule_recall) == 2 and all(0.0 < value <= 1.0 for value in report.schedule_recall)


def test_an_all_hard_schedule_masks_exactly_the_top_k():
    model = tiny_gpa(hard_ratio_start=1.0, hard_ratio_end=1.0, soft_ratio_start=0.0)
    pixel_values, objects = garments()
    report = measure_mask_recall(model, pixel_values, objects, progress=(0.0, 0.5, 1.0))
    assert report.schedule_recall == pytest.approx([report.topk_recall] * 3)
    assert report.hard_recall == pytest.approx(report.topk_recall)
    text = format_mask_recall(report)
    assert "top-37 GPA patches" in text and "hard set at the end (top 37)" in text
    assert f"chance = a random mask = {report.object_coverage:.3f}" in text


def test_script_measures_a_checkpoint_on_fashion_mnist_test_images(tmp_path, capsys):
    tiny_gpa().save_pretrained(tmp_path / "gpa")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_scripts", "evaluate_masks.py")
    spec = importlib.util.spec_from_file_location("evaluate_masks", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--model_name_or_path", str(tmp_path / "gpa"), "--num_images", "20", "--output_dir", str(tmp_path / "out")]
    result = script.run(script.parse_args(args))
    written = json.loads((tmp_path / "out" / "mask_recall.json").read_text())
    assert written == result and written["num_images"] == 20 and written["split"] == "validation"
    assert written["object_coverage"] < written["recall_ceiling"] <= 1.0
    assert "schedule's mask at progress 1.0" in capsys.readouterr().out
