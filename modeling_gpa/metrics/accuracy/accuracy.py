"""Top-1 accuracy: the share of predictions equal to their reference, as an offline `evaluate` metric."""

import datasets
import evaluate
import numpy as np

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
    >>> accuracy = evaluate.load("modeling_gpa/metrics/accuracy")
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
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy needs at least one prediction; got none.")
        weights = np.ones(len(predictions)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        correct = float(((predictions == references) * weights).sum())
        return {"accuracy": correct / float(weights.sum()) if normalize else correct}
