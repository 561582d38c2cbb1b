"""COCO-style box mean average precision, as an offline `evaluate` metric."""

import datasets
import evaluate

from modeling_gpa.evaluation.metric_functions import box_map

_DESCRIPTION = """Per class and IoU threshold (0.50:0.05:0.95), detections of every image ranked by score are matched
greedily to the best-overlapping unmatched reference box of the same class; the precision envelope read at 101 recall
points gives the AP; mAP averages the classes with references and the thresholds (COCO's AP box)."""
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[dict]`): per image, `boxes` (n, 4) as x0, y0, x1, y1, `scores` (n,), `labels` (n,).
    references (`list[dict]`): per image, `boxes` (m, 4) and `labels` (m,).
Returns:
    map, map_50, map_75 (`float`): mAP over the thresholds, at IoU 0.5, at IoU 0.75.
Examples:
    >>> box_map = evaluate.load("modeling_gpa/evaluation/metrics/box_map")
    >>> box_map.compute(
    ...     predictions=[{"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [1]}],
    ...     references=[{"boxes": [[0, 0, 10, 10]], "labels": [1]}],
    ... )["map"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BoxMAP(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        boxes = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        labels = datasets.Sequence(datasets.Value("int64"))
        prediction = {"boxes": boxes, "scores": datasets.Sequence(datasets.Value("float32")), "labels": labels}
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": prediction, "references": {"boxes": boxes, "labels": labels}}),
        )

    def _compute(self, predictions, references) -> dict:
        return box_map(predictions, references)
