"""The offline evaluate metric modules in modeling_gpa/evaluation/metrics, loaded by path."""

import numpy as np
import pytest

from modeling_gpa.evaluation import load_metric


def test_accuracy_counts_matches():
    accuracy = load_metric("accuracy")
    assert accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]) == {"accuracy": 0.75}
    assert accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2], normalize=False) == {"accuracy": 3.0}
    weighted = accuracy.compute(predictions=[0, 1], references=[0, 0], sample_weight=[3.0, 1.0])
    assert weighted["accuracy"] == pytest.approx(0.75)


def test_top_k_accuracy_ranks_the_true_class():
    top_k = load_metric("top_k_accuracy")
    scores = [[0.1, 0.5, 0.4], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]]
    result = top_k.compute(predictions=scores, references=[2, 2, 2], k=[1, 2, 3])
    assert result == {
        "top1_accuracy": pytest.approx(1 / 3),
        "top2_accuracy": pytest.approx(2 / 3),
        "top3_accuracy": 1.0,
    }


def test_top_k_accuracy_rejects_k_above_num_classes():
    with pytest.raises(ValueError, match="1 <= k <= 3"):
        load_metric("top_k_accuracy").compute(predictions=[[0.1, 0.5, 0.4]], references=[0], k=5)


def test_object_recall_is_the_share_of_masked_patches_on_the_object():
    recall = load_metric("object_recall")
    masks = np.array([[1, 1, 0, 0], [1, 0, 1, 1]])
    objects = np.array([[1, 0, 0, 0], [1, 1, 1, 0]])
    result = recall.compute(predictions=masks, references=objects)
    assert result["object_recall"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["object_coverage"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert result["object_fraction"] == pytest.approx(4 / 8)
    assert result["mask_fraction"] == pytest.approx(5 / 8)


def test_object_recall_rejects_empty_masks():
    with pytest.raises(ValueError, match="non-empty mask"):
        load_metric("object_recall").compute(predictions=[[0, 0]], references=[[1, 0]])


def test_unknown_metric_names_the_available_ones():
    with pytest.raises(ValueError, match="accuracy, box_map, mean_iou, object_recall, top_k_accuracy"):
        load_metric("f1")


def test_mean_iou_sums_areas_over_images_and_ignores_255_and_reduced_zeros():
    mean_iou = load_metric("mean_iou")
    mean_iou.add_batch(predictions=[np.array([[0, 1], [2, 2]])], references=[np.array([[1, 1], [3, 0]])])
    mean_iou.add_batch(predictions=[np.array([[1, 1]])], references=[np.array([[2, 255]])])
    result = mean_iou.compute(num_labels=3, reduce_labels=True)
    # After reduce_labels the references are [[0, 0], [2, ignored]] and [[1, ignored]]: per class, intersection /
    # union summed over both images: 0 -> 1/2, 1 -> 1/2 (the second image's ignored pixel is not counted), 2 -> 1/1.
    np.testing.assert_allclose(result["per_category_iou"], [0.5, 0.5, 1.0])
    assert result["mean_iou"] == pytest.approx(2 / 3)
    assert result["overall_accuracy"] == pytest.approx(3 / 4)
    plain = mean_iou.compute(predictions=[np.array([[0, 1]])], references=[np.array([[0, 0]])], num_labels=3)
    assert plain["mean_iou"] == pytest.approx(0.25) and np.isnan(plain["per_category_iou"][2])
