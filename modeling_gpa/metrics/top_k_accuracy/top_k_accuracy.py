"""Top-k accuracy from class scores: a hit when the reference is among the k highest scores, as an `evaluate` metric."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Top-k accuracy = share of examples whose true class is among the k classes with the highest scores."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): (N, num_classes) class scores (logits, probabilities or vote sums).
    references (`list[int]`): true class ids, one per example.
    k (`int` or `list[int]`, defaults to `(1, 5)`): the k (or ks) to report; each must be at most num_classes.
Returns:
    top{k}_accuracy (`float`) for every requested k, in [0, 1].
Examples:
    >>> top_k = evaluate.load("modeling_gpa/metrics/top_k_accuracy")
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
