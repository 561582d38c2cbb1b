"""What every program in run_scripts/ shares: bad input ends it with one line that says what is wrong."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def exit_on_bad_input(function: Callable[..., T], *args) -> T:
    """``function(*args)``; a missing file, an invalid value or a pickle that would run code ends the process with
    one line, ``error: ...``."""
    try:
        return function(*args)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    except pickle.UnpicklingError as error:
        sys.exit(f"error: {pickle_refusal(error)}")


def pickle_refusal(error: pickle.UnpicklingError) -> str:
    """One line for ``torch.load(weights_only=True)`` refusing a pickled file: which global it would have called."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "GLOBAL" in line), lines[-1] if lines else type(error).__name__)
    return (
        f"refused to load a pickled checkpoint file that would run code ({reason.rstrip('.')}): use its safetensors "
        "weights, or a checkpoint from a source you trust"
    )
