"""Which column of a dataset holds the images, which the labels: the one the user named, else a conventional name.

Needs neither `datasets` nor torch: the evaluation code imports it on machines without `datasets`.
"""

from __future__ import annotations

from collections.abc import Sequence


def named_column(columns: Sequence[str], name: str | None, conventional: Sequence[str], kind: str) -> str | None:
    """``name`` when given (a one-line error naming ``--{kind}_column_name`` when it is not a column), else the first
    of ``conventional`` among ``columns``, else ``None``."""
    if name is not None:
        if name not in columns:
            raise ValueError(
                f"{kind.capitalize()} column {name!r} not found: --{kind}_column_name must be one of {list(columns)}."
            )
        return name
    return next((column for column in conventional if column in columns), None)
