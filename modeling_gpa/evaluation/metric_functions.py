"""The computations behind the `evaluate` metric modules in `metrics/`, on numpy arrays.

Each module's `_compute` calls the function of its name, so `evaluate.load(<module path>)` and the fallback of
`evaluation.load_metric` on machines without `evaluate` give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predictions, references, normalize: bool = True, sample_weight=None) -> dict[str, float]:
    """Share of (N,) predicted class ids equal to their (N,) references (a weighted count with normalize=False)."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.size == 0:
        raise ValueError("accuracy needs at least one prediction; got none.")
    weights = np.ones(len(predictions)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    correct = float(((predictions == references) * weights).sum())
    return {"accuracy": correct / float(weights.sum()) if normalize else correct}


def top_k_accuracy(predictions, references, k: int | Sequence[int] = (1, 5)) -> dict[str, float]:
    """``top{k}_accuracy`` per k: share of (N, num_classes) score rows whose (N,) reference is among the k best."""
    scores, references = np.asarray(predictions, dtype=np.float64), np.asarray(references)
    if scores.ndim != 2 or len(scores) == 0:
        raise ValueError(f"top_k_accuracy needs (N, num_classes) scores; got shape {scores.shape}.")
    ks = [k] if isinstance(k, int) else list(k)
    num_classes = scores.shape[1]
    if any(not 1 <= value <= num_classes for value in ks):
        raise ValueError(f"top_k_accuracy k={ks} is invalid; allowed values: 1 <= k <= {num_classes} classes.")
    # Rank of the true class = how many classes score strictly higher; ties count in the reference's favour.
    true_scores = scores[np.arange(len(scores)), references][:, None]
    rank = (scores > true_scores).sum(axis=1)
    return {f"top{value}_accuracy": float((rank < value).mean()) for value in ks}


def object_recall(predictions, references) -> dict[str, float]:
    """Object recall and coverage of (N, n) binary patch masks against (N, n) object patches.

    Returns ``object_recall`` (mean |mask & object| / |mask| over images with a mask), ``object_coverage`` (mean
    |mask & object| / |object| over images with an object), ``object_fraction`` (mean |object| / n: a random mask's
    expected recall) and ``mask_fraction`` (mean |mask| / n).
    """
    masks, objects = np.asarray(predictions) > 0, np.asarray(references) > 0
    if masks.shape != objects.shape or masks.ndim != 2:
        raise ValueError(
            f"object_recall needs predictions and references of the same (N, n) shape; got {masks.shape} "
            f"and {objects.shape}."
        )
    hits = (masks & objects).sum(axis=1).astype(np.float64)
    mask_sizes, object_sizes = masks.sum(axis=1), objects.sum(axis=1)
    has_mask, has_object = mask_sizes > 0, object_sizes > 0
    if not has_mask.any():
        raise ValueError("object_recall needs at least one non-empty mask in predictions; got none.")
    coverage = (hits[has_object] / object_sizes[has_object]).mean() if has_object.any() else 0.0
    return {
        "object_recall": float((hits[has_mask] / mask_sizes[has_mask]).mean()),
        "object_coverage": float(coverage),
        "object_fraction": float(objects.mean()),
        "mask_fraction": float(masks.mean()),
    }


def mean_iou(
    predictions,
    references,
    num_labels: int,
    ignore_index: int = 255,
    reduce_labels: bool = False,
    nan_to_num: float | None = None,
) -> dict:
    """mIoU of predicted (N, H, W) label maps (or a list of (H, W) maps) against their references, as `evaluate`'s
    ``mean_iou`` (mmsegmentation's ``mean_iou``): areas summed over all images, then one IoU per class.

    ``reduce_labels``: references' 0 (ADE20K's "other") becomes ``ignore_index`` and every other label drops by one.
    Pixels whose reference is ``ignore_index`` count nowhere. Classes absent from both predictions and references
    get NaN (``nan_to_num`` replaces it) and are left out of the means. Returns ``mean_iou``, ``mean_accuracy``,
    ``overall_accuracy`` (floats) and ``per_category_iou``, ``per_category_accuracy`` ((num_labels,) arrays).
    """
    area_intersect = np.zeros(num_labels, dtype=np.int64)
    area_prediction = np.zeros(num_labels, dtype=np.int64)
    area_label = np.zeros(num_labels, dtype=np.int64)
    for prediction, reference in zip(predictions, references, strict=True):
        prediction, reference = np.asarray(prediction).astype(np.int64), np.asarray(reference).astype(np.int64)
        if prediction.shape != reference.shape:
            raise ValueError(
                f"mean_iou got a prediction of shape {prediction.shape} for a reference {reference.shape}."
            )
        if reduce_labels:
            reference = np.where(reference == 0, ignore_index, reference - 1)
            reference[reference == ignore_index - 1] = ignore_index
        valid = reference != ignore_index
        prediction, reference = prediction[valid], reference[valid]
        intersect = prediction[prediction == reference]
        area_intersect += np.bincount(intersect, minlength=num_labels)[:num_labels]
        area_prediction += np.bincount(prediction, minlength=num_labels)[:num_labels]
        area_label += np.bincount(reference, minlength=num_labels)[:num_labels]
    area_union = area_prediction + area_label - area_intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = area_intersect / area_union
        per_class_accuracy = area_intersect / area_label
    result = {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mean_accuracy": float(np.nanmean(per_class_accuracy))
        if np.isfinite(per_class_accuracy).any()
        else float("nan"),
        "overall_accuracy": float(area_intersect.sum() / max(area_label.sum(), 1)),
        "per_category_iou": iou,
        "per_category_accuracy": per_class_accuracy,
    }
    if nan_to_num is not None:
        result["per_category_iou"] = np.nan_to_num(iou, nan=nan_to_num)
        result["per_category_accuracy"] = np.nan_to_num(per_class_accuracy, nan=nan_to_num)
    return result
