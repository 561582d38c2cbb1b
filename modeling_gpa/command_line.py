"""What every program in run_scripts/ shares: bad input ends it with one line that says what is wrong."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def exit_on_bad_input(function: Callable[..., T], *args) -> T:
    """``function(*args)``; a missing file or an invalid value ends the process with one line, ``error: ...``."""
    try:
        return function(*args)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
