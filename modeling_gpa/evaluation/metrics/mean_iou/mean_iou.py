"""Mean intersection over union of segmentation maps, as an offline `evaluate` metric (evaluate's `mean_iou`)."""

import datasets
import evaluate

from modeling_gpa.evaluation.metric_functions import mean_iou

_DESCRIPTION = """IoU of class c = |prediction == c and reference == c| / |prediction == c or reference == c|, with the
areas summed over every image (not averaged per image); mean IoU averages the classes present in the predictions or
references. Pixels labelled `ignore_index` count nowhere."""
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[ndarray]`): predicted (H, W) label maps.
    references (`list[ndarray]`): reference (H, W) label maps, the predictions' sizes.
    num_labels (`int`): number of classes.
    ignore_index (`int`, defaults to 255): reference value that is not scored.
    reduce_labels (`bool`, defaults to `False`): references' 0 becomes `ignore_index` and the others drop by one
        (ADE20K's annotations, whose 0 is "other").
    nan_to_num (`float`, *optional*): value for the per-class entries of classes seen nowhere (NaN otherwise).
Returns:
    mean_iou, mean_accuracy, overall_accuracy (`float`), per_category_iou, per_category_accuracy (`ndarray`).
Examples:
    >>> mean_iou = evaluate.load("modeling_gpa/evaluation/metrics/mean_iou")
    >>> mean_iou.compute(predictions=[[[0, 1]]], references=[[[0, 0]]], num_labels=2)["mean_iou"]
    0.25
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        maps = datasets.Sequence(datasets.Sequence(datasets.Value("uint16")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": maps, "references": maps}),
        )

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int = 255,
        reduce_labels: bool = False,
        nan_to_num: float | None = None,
    ) -> dict:
        return mean_iou(predictions, references, num_labels, ignore_index, reduce_labels, nan_to_num)
