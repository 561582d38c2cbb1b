"""What every program in run_scripts/ shares: bad input ends it with one line that says what is wrong, and a
checkpoint directory is checked before anything loads it ([`check_checkpoint`])."""

from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Callable
from typing import TypeVar

from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .checkpoint_files import safetensors_files, safetensors_problem

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


TRUST_REMOTE_CODE_HELP = (
    "Let a checkpoint whose config.json names its own code (auto_map, for a model type this installation does not "
    "know) run that code. Only for checkpoints you trust and whose code you have read; without it they are refused."
)


def check_checkpoint(name_or_path: str | None, trust_remote_code: bool = False, flag: str = "--model_name_or_path"):
    """Raises a one-line ``ValueError`` naming ``flag`` before anything reads a local checkpoint directory whose
    weights cannot load (a git-lfs pointer, a header larger than the file, a truncated or missing shard) or whose
    config needs code of its own while ``trust_remote_code`` is off. Hub ids (no such directory) are left to the
    loader."""
    if not name_or_path or not os.path.isdir(name_or_path):
        return
    try:
        weight_files = safetensors_files(name_or_path)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{flag} {name_or_path}: its weight index is unreadable ({type(error).__name__})") from None
    for path in weight_files:
        problem = safetensors_problem(path) if os.path.isfile(path) else f"{os.path.basename(path)} is missing"
        if problem:
            raise ValueError(f"{flag} {name_or_path} cannot be loaded: {problem}")
    code = custom_code(name_or_path)
    if code and not trust_remote_code:
        raise ValueError(
            f"{flag} {name_or_path} needs its own code to load ({code}), which was not run: pass "
            "--trust_remote_code if you trust that checkpoint and have read its code"
        )


def custom_code(directory: str) -> str | None:
    """The code a checkpoint's ``config.json`` asks to run (its ``auto_map`` entry for ``AutoConfig``), when its
    ``model_type`` is not one this installation (Transformers and the GPA classes) knows; else None."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError):
        return None  # the loader names an unreadable config
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map or config.get("model_type") in CONFIG_MAPPING:
        return None
    return (
        str(auto_map.get("AutoConfig", next(iter(auto_map.values())))) if isinstance(auto_map, dict) else str(auto_map)
    )
