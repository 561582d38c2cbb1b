"""Object recall of patch masks: the share of masked (or selected) patches that lie on the object.

This is the measure of few-shot head selection (paper section 3.4): a mask that favours the object (GPA's hard and
soft patches on a good teacher) puts more of its patches on it than MAE's uniformly random mask, whose expected
object recall is the object's share of the patches (``object_fraction``).
"""

import datasets
import evaluate

from modeling_gpa.evaluation.metric_functions import object_recall

_DESCRIPTION = "Object recall (share of masked patches on the object) and object coverage of binary patch masks."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[int]]`): (N, n) masks, 1 for the masked (or selected) patches of each image.
    references (`list[list[int]]`): (N, n) ground truth, 1 for the patches on the object.
Returns:
    object_recall (`float`): mean over images of |mask & object| / |mask| (images with an empty mask skipped).
    object_coverage (`float`): mean over images of |mask & object| / |object|: how much of the object is hidden
        (images without object patches skipped).
    object_fraction (`float`): mean of |object| / n: the object recall a uniformly random mask expects.
    mask_fraction (`float`): mean of |mask| / n: the object coverage a uniformly random mask expects.
Examples:
    >>> recall = evaluate.load("modeling_gpa/evaluation/metrics/object_recall")
    >>> recall.compute(predictions=[[1, 1, 0, 0]], references=[[1, 0, 0, 0]])
    {'object_recall': 0.5, 'object_coverage': 1.0, 'object_fraction': 0.25, 'mask_fraction': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ObjectRecall(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int8")),
                    "references": datasets.Sequence(datasets.Value("int8")),
                }
            ),
        )

    def _compute(self, predictions, references) -> dict:
        return object_recall(predictions, references)
