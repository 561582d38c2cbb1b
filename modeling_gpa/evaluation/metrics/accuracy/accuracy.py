"""Top-1 accuracy: the share of predictions equal to their reference, as an offline `evaluate` metric."""

import datasets
import evaluate

from modeling_gpa.evaluation.metric_functions import accuracy

_DESCRIPTION = "Accuracy = (number of predictions equal to their reference) / (number of predictions)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids, one per example.
    references (`list[int]`): true class ids, one per example.
    normalize (`bool`, defaults to `True`): `False` returns the count of correct predictions instead of the share.
    sample_weight (`list[float]`, *optional*): one weight per example.
Returns:
    accuracy (`float`): in [0, 1] (or a count with `normalize=False`).
Examples:
    >>> accuracy = evaluate.load("modeling_gpa/evaluation/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        return accuracy(predictions, references, normalize=normalize, sample_weight=sample_weight)
