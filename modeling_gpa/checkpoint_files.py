"""Whether a checkpoint directory can be loaded, checked from its files' structure without loading any weights.

A checkpoint cut off by a crash, a full disk or a copy that stopped early can look complete (every file present)
and still fail to load: a truncated ``trainer_state.json`` is invalid JSON, a truncated ``model.safetensors`` is
shorter than its header says, a truncated ``optimizer.pt`` lacks the zip directory ``torch.save`` ends with. A
clone made without ``git lfs pull`` holds small text pointers where the weights should be, and a garbage file's first
8 bytes read as a header size of about 10^18 bytes. [`checkpoint_problem`] finds each of these by reading headers
only (milliseconds for a ViT-L checkpoint), and names a checkpoint without its optimizer, scheduler or trainer state
as incomplete: resuming from it would silently restart AdamW's moments or the learning-rate schedule.
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
# What a resume restores beyond the weights, by the file that holds it.
TRAINING_STATE_FILES = {
    "optimizer.pt": "AdamW's moments",
    "scheduler.pt": "the learning-rate schedule",
    TRAINER_STATE_NAME: "the step count (and the epoch, logs and stateful callbacks)",
}
# How every git-lfs pointer file starts (https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md).
GIT_LFS_POINTER_PREFIX = b"version https://git-lfs"


def safetensors_problem(path: str) -> str | None:
    """Why the safetensors file at ``path`` cannot load (a git-lfs pointer, an unreadable header or one larger than
    the file, or shorter than its header says), else None. Reads at most the header."""
    name = os.path.basename(path)
    try:
        actual = os.path.getsize(path)
        with open(path, "rb") as file:
            start = file.read(len(GIT_LFS_POINTER_PREFIX))
            if start == GIT_LFS_POINTER_PREFIX:
                return f"{name} is a git-lfs pointer, not the weights: run git lfs pull in its repository"
            (header_size,) = struct.unpack("<Q", start[:8])
            file.seek(8)
            if header_size > actual - 8:
                return f"{name} has no readable header (it claims {header_size} header bytes in a {actual}-byte file)"
            header = json.loads(file.read(header_size))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (OSError, struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        return f"{name} has no readable header ({type(error).__name__})"
    expected = 8 + header_size + max(ends, default=0)
    if actual < expected:
        return f"{name} is truncated ({actual} of {expected} bytes)"
    return None


def safetensors_files(checkpoint: str) -> list[str]:
    """Paths of the safetensors weight files of a checkpoint directory: ``model.safetensors`` and the shards its
    index names (which may be missing). Raises ``OSError``, ``ValueError`` or ``KeyError`` for an unreadable index."""
    files = [SAFE_WEIGHTS_NAME] if os.path.isfile(os.path.join(checkpoint, SAFE_WEIGHTS_NAME)) else []
    index_path = os.path.join(checkpoint, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as file:
            files += sorted(set(json.load(file)["weight_map"].values()))
    return [os.path.join(checkpoint, name) for name in files]


def safetensors_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from the header of a safetensors file that [`safetensors_problem`] passed."""
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(header_size))
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


def missing_training_state(checkpoint: str) -> list[str]:
    """The files of [`TRAINING_STATE_FILES`] that the checkpoint directory lacks. A DeepSpeed checkpoint keeps its
    optimizer and scheduler in ``global_step*/``, an FSDP one its optimizer in ``optimizer*`` files or folders."""
    names = os.listdir(checkpoint)
    deepspeed = any(name.startswith("global_step") for name in names)
    missing = []
    if not deepspeed and not any(name.startswith("optimizer") for name in names):
        missing.append("optimizer.pt")
    if not deepspeed and "scheduler.pt" not in names:
        missing.append("scheduler.pt")
    if TRAINER_STATE_NAME not in names:
        missing.append(TRAINER_STATE_NAME)
    return missing


def has_weights(checkpoint: str) -> bool:
    """Whether the checkpoint directory holds model weights in any format ``Trainer`` saves."""
    return any(
        name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, "pytorch_model.bin", "pytorch_model.bin.index.json")
        or name.startswith(("pytorch_model_fsdp", "global_step"))
        for name in os.listdir(checkpoint)
    )


def checkpoint_problem(checkpoint: str, weights_only: bool = False) -> str | None:
    """Why ``checkpoint`` (a ``Trainer`` checkpoint directory) cannot be resumed from, in a few words, or None.

    A checkpoint without ``optimizer.pt``, ``scheduler.pt`` or ``trainer_state.json`` is incomplete unless
    ``weights_only`` (then only its weights and the files it has must load)."""
    if not os.path.isdir(checkpoint):
        return "no such directory"
    if not has_weights(checkpoint):
        return "it has no weights (cut off while saving)"
    missing = missing_training_state(checkpoint)
    if not weights_only and TRAINER_STATE_NAME in missing:
        return f"it has no {TRAINER_STATE_NAME} (cut off while saving)"
    if not weights_only and missing:
        reset = " and ".join(TRAINING_STATE_FILES[name] for name in missing)
        return (
            f"it is incomplete, without {', '.join(missing)} (resuming would restart {reset}; "
            "--resume_from_weights_only resumes from its weights alone)"
        )
    state_path = os.path.join(checkpoint, TRAINER_STATE_NAME)
    if os.path.isfile(state_path):
        try:
            with open(state_path, encoding="utf-8") as file:
                json.load(file)
        except (OSError, ValueError) as error:
            return f"{TRAINER_STATE_NAME} is not valid JSON ({type(error).__name__}: {str(error).splitlines()[0]})"
    try:
        weight_files = safetensors_files(checkpoint)
    except (OSError, ValueError, KeyError) as error:
        return f"{SAFE_WEIGHTS_INDEX_NAME} is unreadable ({type(error).__name__})"
    for path in weight_files:
        if not os.path.isfile(path):
            return f"{os.path.basename(path)} is missing"
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


class ResumeRefused(ValueError):
    """A checkpoint that cannot be resumed from, or not by this run; the message fits on one line."""


def check_resumable(checkpoint: str, weights_only: bool = False) -> str:
    """``checkpoint`` when it can be resumed from; else a one-line [`ResumeRefused`] saying why and what to do."""
    problem = checkpoint_problem(checkpoint, weights_only)
    if problem:
        raise ResumeRefused(
            f"cannot resume from {checkpoint}: {problem}; point --resume_from_checkpoint at another checkpoint, or "
            "leave it out to take the last one in --output_dir that loads"
        )
    return checkpoint


def weights_only_resume_note(checkpoint: str) -> str | None:
    """What a resume from ``checkpoint``'s weights alone starts afresh (one line), or None when it is complete."""
    missing = missing_training_state(checkpoint)
    if not missing:
        return None
    reset = ", ".join(TRAINING_STATE_FILES[name] for name in missing)
    files = ", ".join(missing)
    return f"resuming from the weights of {checkpoint} only: it has no {files}, so these start afresh: {reset}"


__all__ = [
    "ResumeRefused",
    "check_resumable",
    "checkpoint_problem",
    "has_weights",
    "missing_training_state",
    "safetensors_files",
    "safetensors_problem",
    "safetensors_shapes",
    "weights_only_resume_note",
]
