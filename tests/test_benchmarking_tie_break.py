import json

import pytest
import torch
from tiny import tiny_kwargs

from benchmarks.measuring import tie_break as benchmark_tie_break
from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.data import load_image_datasets
from modeling_gpa.data.ground_truth import annotated_model_inputs
from modeling_gpa.data.image_inputs import ImageSettings
from modeling_gpa.head_selection import attention_head_ranking


@pytest.mark.slow
def test_both_choices_of_every_draw_are_measured_on_the_same_heldout_images(tmp_path):
    torch.manual_seed(0)
    GPAForPreTraining(GPAConfig(**tiny_kwargs())).save_pretrained(tmp_path / "gpa")
    checkpoint = str(tmp_path / "gpa")
    args = ["--checkpoints", checkpoint, "--include_random_init", "--draws", "3", "--num_heldout", "30"]
    results = benchmark_tie_break.main([*args, "--output", str(tmp_path / "report")])
    assert [result["summary"]["checkpoint"] for result in results] == [checkpoint, f"{checkpoint} at random init"]
    model = GPAForPreTraining.from_pretrained(checkpoint).eval()
    splits, column = load_image_datasets(dataset_name="fashion_mnist")
    settings = ImageSettings.from_pretrained(checkpoint, model.config)
    pixel_values, objects = annotated_model_inputs(
        30, settings, model.config.patch_size, dataset=splits["validation"], image_column=column
    )
    summary, draws = results[0]["summary"], results[0]["draws"]
    assert [draw["seed"] for draw in draws] == [0, 1, 2] and summary["draws"] == 3
    for draw in draws:
        assert draw["changed"] <= (draw["num_tied_best"] > 1)
        for choice in ("tie_break", "order"):
            block, head = draw[choice]["block_head"].removeprefix("block ").split(", ")
            head = None if head == "all heads" else int(head.removeprefix("head "))
            recall, precision = attention_head_ranking(model, pixel_values, objects, layer=int(block), head=head)
            assert (draw[choice]["recall"], draw[choice]["average_precision"]) == pytest.approx((recall, precision))
    assert summary["tie_break_recall_all"] == pytest.approx(sum(d["tie_break"]["recall"] for d in draws) / 3)
    table = (tmp_path / "report.md").read_text()
    assert f"| {checkpoint} | {summary['chance'] * 100:.1f} | {summary['tied']} of 3 |" in table
    assert json.loads((tmp_path / "report.json").read_text())["results"] == results
