"""Top-k accuracy from class scores: a hit when the reference is among the k highest scores, as an `evaluate` metric."""

import datasets
import evaluate

from modeling_gpa.evaluation.metric_functions import top_k_accuracy

_DESCRIPTION = "Top-k accuracy = share of examples whose true class is among the k classes with the highest scores."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): (N, num_classes) class scores (logits, probabilities or vote sums).
    references (`list[int]`): true class ids, one per example.
    k (`int` or `list[int]`, defaults to `(1, 5)`): the k (or ks) to report; each must be at most num_classes.
Returns:
    top{k}_accuracy (`float`) for every requested k, in [0, 1].
Examples:
    >>> top_k = evaluate.load("modeling_gpa/evaluation/metrics/top_k_accuracy")
    >>> top_k.compute(predictions=[[0.1, 0.5, 0.4], [0.8, 0.1, 0.1]], references=[2, 1], k=[1, 2])
    {'top1_accuracy': 0.0, 'top2_accuracy': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=(1, 5)) -> dict:
        return top_k_accuracy(predictions, references, k=k)
