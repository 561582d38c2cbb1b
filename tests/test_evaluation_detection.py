import numpy as np
import pytest
import torch
from tiny import tiny_kwargs

from modeling_gpa import GPABackbone, GPAConfig
from modeling_gpa.evaluation.detection import conditional_detr, detections, detr_targets, mask_boxes, train_detector
from modeling_gpa.evaluation.metric_loading import load_metric


def test_boxes_from_masks_and_detr_targets():
    masks = torch.zeros(2, 28, 28, dtype=torch.bool)
    masks[0, 3:10, 5:20] = True
    masks[1, 20:28, 0:4] = True
    boxes = mask_boxes(masks)
    assert boxes.tolist() == [[5, 3, 20, 10], [0, 20, 4, 28]]
    targets = detr_targets(boxes, torch.tensor([4, 7]), 28)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[12.5, 6.5, 15.0, 7.0]]) / 28)
    assert targets[1]["class_labels"].tolist() == [7]


def test_box_map_is_cocos_average_over_thresholds():
    box_map = load_metric("box_map")
    references = [
        {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 2]},
        {"boxes": [[5, 5, 15, 15]], "labels": [1]},
    ]
    predictions = [
        {
            "boxes": [[0, 0, 10, 10], [20, 20, 30, 31], [50, 50, 60, 60]],
            "scores": [0.9, 0.8, 0.95],
            "labels": [1, 2, 1],
        },
        {"boxes": [[5, 5, 15, 16]], "scores": [0.7], "labels": [1]},
    ]
    result = box_map.compute(predictions=predictions, references=references)
    # Thresholds 0.50-0.90: class 1 has a false positive ranked first, then both boxes (precision 2/3 at every
    # recall), class 2 its box (IoU 10/11). At 0.95 only the exact class-1 box counts: precision 1/2 up to recall 1/2,
    # 51 of the 101 recall points; class 2 gets 0.
    assert result["map_50"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["map"] == pytest.approx((9 * (2 / 3 + 1) / 2 + 0.5 * 51 / 101 / 2) / 10)
    perfect = [
        {"boxes": row["boxes"], "scores": [1.0] * len(row["labels"]), "labels": row["labels"]} for row in references
    ]
    assert box_map.compute(predictions=perfect, references=references) == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}


def test_conditional_detr_over_the_backbone_learns_the_boxes():
    torch.manual_seed(0)
    config = GPAConfig(**tiny_kwargs(num_hidden_layers=2))
    model = conditional_detr(None, {0: "a", 1: "b"}, config, d_model=32, num_queries=4)
    assert isinstance(model.model.backbone.model, GPABackbone)
    images = torch.zeros(16, 1, 28, 28)
    masks = torch.zeros(16, 28, 28, dtype=torch.bool)
    for index in range(16):
        top, left = 2 + index % 5 * 3, 4 + index % 3 * 4
        masks[index, top : top + 10, left : left + 12] = True
    images[masks.unsqueeze(1)] = 2.0
    targets = detr_targets(mask_boxes(masks), torch.arange(16) % 2, 28)
    losses = train_detector(model, images, targets, steps=24, batch_size=8, learning_rate=1e-3)
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4])
    found = detections(model.eval(), images[:2], top_k=3)
    assert found[0]["boxes"].shape == (3, 4) and found[0]["scores"].shape == (3,)
