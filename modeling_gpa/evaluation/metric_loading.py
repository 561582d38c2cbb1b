"""The offline ``evaluate`` modules in ``evaluation/metrics/`` by name, with a fallback without ``evaluate``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import metric_functions

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def load_metric(name: str):
    """One of this package's metric modules (``accuracy``, ``top_k_accuracy``, ``object_recall``, ``mean_iou``,
    ``box_map``), offline.

    Where `evaluate` is not installed (the GPU machines benchmarks run on), returns an object whose ``compute`` calls
    the same function of `metric_functions` that the module's ``_compute`` calls.
    """
    path = METRICS_DIR / name / f"{name}.py"
    if not path.is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"Unknown metric {name!r}; allowed values: {', '.join(available)}.")
    try:
        import evaluate
    except ImportError:
        return ArrayMetric(getattr(metric_functions, name))
    return evaluate.load(str(path))


class ArrayMetric:
    """``compute(predictions=..., references=..., **kwargs)`` as an `evaluate` module's, without `evaluate`."""

    def __init__(self, function: Callable[..., dict]):
        self.function = function
        self.predictions, self.references = [], []

    def add_batch(self, *, predictions, references) -> None:
        self.predictions.extend(predictions)
        self.references.extend(references)

    def compute(self, *, predictions=None, references=None, **kwargs) -> dict:
        if predictions is None:
            predictions, references = self.predictions, self.references
            self.predictions, self.references = [], []
        return self.function(predictions, references, **kwargs)
