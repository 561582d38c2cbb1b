"""The allowed range of every numeric training flag, checked before anything is loaded.

``Trainer`` and ``torch`` find a zero batch size or a negative learning rate only once training starts, deep inside
the DataLoader or AdamW, with a traceback. [`check_flag_ranges`] says it first, in one line naming the flag and the
range: ``--per_device_train_batch_size 0 is invalid; pass an integer >= 1.``
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FlagRange:
    """Numbers from ``low`` to ``high`` (None: unbounded), each end included unless ``*_open``; ``integer``
    demands whole numbers; ``also`` lists values allowed outside the range (``-1`` for "unset")."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    also: tuple[float, ...] = ()

    def __contains__(self, value: float) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        if value <= self.low if self.low_open else value < self.low:
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """The range in words: 'an integer >= 1', 'a number in [0, 1)', 'an integer >= 1 or -1'."""
        kind = "an integer" if self.integer else "a number"
        if self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{kind} in {opening}{_number(self.low)}, {_number(self.high)}{closing}"
        else:
            text = f"{kind} {'>' if self.low_open else '>='} {_number(self.low)}"
        return " or ".join([text, *(_number(value) for value in self.also)])


def _number(value: float) -> str:
    """``value`` as written on a command line: 4294967295, 0.5, 1e-08."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE_INTEGER = FlagRange(low=1, integer=True)
NON_NEGATIVE_INTEGER = FlagRange(low=0, integer=True)
POSITIVE = FlagRange(low=0, low_open=True)
NON_NEGATIVE = FlagRange(low=0)
FRACTION = FlagRange(low=0, high=1)
# Adam's betas: 1 would make the bias correction divide by zero.
BETA = FlagRange(low=0, high=1, high_open=True)

# TrainingArguments' numeric flags (and GPATrainingArguments'): batch sizes, learning rates, epochs, steps, warmup,
# workers. A flag missing from the arguments is skipped, so Transformers releases without one still work.
TRAINING_FLAG_RANGES = {
    "per_device_train_batch_size": POSITIVE_INTEGER,
    "per_device_eval_batch_size": POSITIVE_INTEGER,
    "gradient_accumulation_steps": POSITIVE_INTEGER,
    "eval_accumulation_steps": POSITIVE_INTEGER,
    "learning_rate": POSITIVE,
    "base_learning_rate": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "adam_beta1": BETA,
    "adam_beta2": BETA,
    "adam_epsilon": POSITIVE,
    "max_grad_norm": NON_NEGATIVE,
    "num_train_epochs": POSITIVE,
    "max_steps": FlagRange(low=1, integer=True, also=(-1,)),
    "warmup_steps": NON_NEGATIVE,
    "warmup_ratio": FRACTION,
    "logging_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "save_total_limit": POSITIVE_INTEGER,
    "dataloader_num_workers": NON_NEGATIVE_INTEGER,
    "dataloader_prefetch_factor": POSITIVE_INTEGER,
    "seed": FlagRange(low=0, high=2**32 - 1, integer=True),
    "max_nonfinite_steps": POSITIVE_INTEGER,
}

# The dataset flags of the training scripts (ImageDataArguments and the scripts' additions).
DATA_FLAG_RANGES = {
    "max_train_samples": POSITIVE_INTEGER,
    "max_eval_samples": POSITIVE_INTEGER,
    "train_val_split": BETA,
    "shuffle_buffer_size": NON_NEGATIVE_INTEGER,
    "train_examples": POSITIVE_INTEGER,
}


def check_flag_ranges(arguments: object, ranges: dict[str, FlagRange]) -> None:
    """Raises a one-line ``ValueError`` for the first attribute of ``arguments`` named in ``ranges`` whose value
    (when set: None is unset) lies outside its range, naming the flag and the range."""
    for name, allowed in ranges.items():
        value = getattr(arguments, name, None)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value not in allowed:
            raise ValueError(f"--{name} {value} is invalid; pass {allowed.describe()}.")


__all__ = ["DATA_FLAG_RANGES", "TRAINING_FLAG_RANGES", "FlagRange", "check_flag_ranges"]
