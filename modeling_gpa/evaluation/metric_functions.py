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


def box_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(n, 4) and (m, 4) boxes (x0, y0, x1, y1) -> (n, m) intersection over union."""
    top_left = np.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(-1)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(-1)[:, None] + (others[:, 2:] - others[:, :2]).prod(-1)[None]
    return intersection / np.maximum(areas - intersection, 1e-12)


def box_map(predictions, references, iou_thresholds: Sequence[float] | None = None) -> dict[str, float]:
    """COCO-style box mAP: per class and IoU threshold (0.50:0.05:0.95), detections of all images ranked by score,
    each matched greedily to the best-overlapping unmatched reference box of its image, precision made monotone and
    read at 101 recall points; averaged over the classes that have references.

    ``predictions``: one dict per image with ``boxes`` (n, 4) x0 y0 x1 y1, ``scores`` (n,), ``labels`` (n,);
    ``references``: one dict per image with ``boxes`` and ``labels``. Returns ``map``, ``map_50`` and ``map_75``.
    """
    thresholds = np.arange(0.5, 0.96, 0.05) if iou_thresholds is None else np.asarray(iou_thresholds)
    images = [
        {
            key: np.asarray(value, dtype=np.float64).reshape(-1, 4) if key == "boxes" else np.asarray(value)
            for key, value in row.items()
        }
        for row in [*predictions, *references]
    ]
    predictions, references = images[: len(predictions)], images[len(predictions) :]
    classes = np.unique(np.concatenate([row["labels"] for row in references])) if references else []
    precision = np.zeros((len(thresholds), len(classes)))
    for class_index, label in enumerate(classes):
        ranked = []  # (score, image, box index) of this class's detections
        for image, row in enumerate(predictions):
            ranked += [(row["scores"][i], image, i) for i in np.flatnonzero(row["labels"] == label)]
        ranked.sort(key=lambda item: -item[0])
        num_references = sum(int((row["labels"] == label).sum()) for row in references)
        for threshold_index, threshold in enumerate(thresholds):
            matched = [np.zeros(int((row["labels"] == label).sum()), dtype=bool) for row in references]
            hits = np.zeros(len(ranked))
            for rank, (_, image, box) in enumerate(ranked):
                targets = references[image]["boxes"][references[image]["labels"] == label]
                if not len(targets):
                    continue
                overlaps = box_iou(predictions[image]["boxes"][box : box + 1], targets)[0]
                overlaps[matched[image]] = -1.0
                best = int(overlaps.argmax())
                if overlaps[best] >= threshold:
                    matched[image][best], hits[rank] = True, 1.0
            true_positives = np.cumsum(hits)
            recall = true_positives / num_references
            precisions = np.maximum.accumulate((true_positives / np.arange(1, len(hits) + 1))[::-1])[::-1]
            points = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
            precision[threshold_index, class_index] = (
                np.where(points < len(precisions), precisions[np.minimum(points, len(precisions) - 1)], 0.0).mean()
                if len(hits)
                else 0.0
            )
    per_threshold = precision.mean(axis=1) if len(classes) else np.zeros(len(thresholds))
    result = {"map": float(per_threshold.mean())}
    for name, value in (("map_50", 0.5), ("map_75", 0.75)):
        matches = np.flatnonzero(np.isclose(thresholds, value))
        if len(matches):
            result[name] = float(per_threshold[matches[0]])
    return result
