"""Whether a checkpoint directory can be loaded, checked from its files' structure without loading any weights.

A checkpoint cut off by a crash, a full disk or a copy that stopped early can look complete (every file present)
and still fail to load: a truncated ``trainer_state.json`` is invalid JSON, a truncated ``model.safetensors`` is
shorter than its header says, a truncated ``optimizer.pt`` lacks the zip directory ``torch.save`` ends with.
[`checkpoint_problem`] finds each of these by reading headers only (milliseconds for a ViT-L checkpoint).
"""

from __future__ import annotations

import glob
import json
import os
import struct
import zipfile

from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

# transformers.trainer.TRAINER_STATE_NAME; importing that module needs `datasets`, which the model code must not.
TRAINER_STATE_NAME = "trainer_state.json"

# Files torch.save writes into a Trainer checkpoint (zip archives).
TORCH_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")


def safetensors_problem(path: str) -> str | None:
    """Why the safetensors file at ``path`` cannot load (unreadable header, or shorter than it says), else None."""
    try:
        with open(path, "rb") as file:
            (header_size,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(header_size))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as error:
        return f"{os.path.basename(path)} has no readable header ({type(error).__name__})"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    expected = 8 + header_size + max(ends, default=0)
    actual = os.path.getsize(path)
    if actual < expected:
        return f"{os.path.basename(path)} is truncated ({actual} of {expected} bytes)"
    return None


def checkpoint_problem(checkpoint: str) -> str | None:
    """Why ``checkpoint`` (a ``Trainer`` checkpoint directory) cannot be resumed from, in a few words, or None."""
    if not os.path.isdir(checkpoint):
        return "no such directory"
    state_path = os.path.join(checkpoint, TRAINER_STATE_NAME)
    if not os.path.isfile(state_path):
        return f"it has no {TRAINER_STATE_NAME} (cut off while saving)"
    try:
        with open(state_path, encoding="utf-8") as file:
            json.load(file)
    except (OSError, ValueError) as error:
        return f"{TRAINER_STATE_NAME} is not valid JSON ({type(error).__name__}: {str(error).splitlines()[0]})"
    weight_files = [SAFE_WEIGHTS_NAME] if os.path.isfile(os.path.join(checkpoint, SAFE_WEIGHTS_NAME)) else []
    index_path = os.path.join(checkpoint, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as file:
                weight_files += sorted(set(json.load(file)["weight_map"].values()))
        except (OSError, ValueError, KeyError) as error:
            return f"{SAFE_WEIGHTS_INDEX_NAME} is unreadable ({type(error).__name__})"
    for name in weight_files:
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if problem := safetensors_problem(path):
            return problem
    for name in TORCH_FILES:
        path = os.path.join(checkpoint, name)
        if os.path.isfile(path) and not zipfile.is_zipfile(path):
            return f"{name} is truncated or not a torch.save archive"
    # Each process's position in a streamed dataset (modeling_gpa.training.streaming).
    for path in sorted(glob.glob(os.path.join(checkpoint, "stream_state_rank*.json"))):
        try:
            with open(path, encoding="utf-8") as file:
                json.load(file)
        except (OSError, ValueError) as error:
            return f"{os.path.basename(path)} is not valid JSON ({type(error).__name__})"
    return None


def check_resumable(checkpoint: str) -> str:
    """``checkpoint`` when it can be resumed from; else a one-line ``ValueError`` saying why and what to do."""
    problem = checkpoint_problem(checkpoint)
    if problem:
        raise ValueError(
            f"cannot resume from {checkpoint}: {problem}; point --resume_from_checkpoint at another checkpoint, or "
            "leave it out to take the last one in --output_dir that loads"
        )
    return checkpoint


__all__ = ["check_resumable", "checkpoint_problem", "safetensors_problem"]
