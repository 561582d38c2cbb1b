"""Which checkpoint a run resumes from: the last one in ``--output_dir`` that loads and holds the model this run
builds, checked from its files, its ``config.json`` and its weight headers before ``Trainer`` loads it.

A resume with another width, depth, head count or patch size would otherwise end in Transformers' load-report table
and a traceback about ``ignore_mismatched_sizes``; a checkpoint whose ``model.safetensors`` was overwritten with
another model's weights the same way. [`check_same_architecture`] stops in one line naming both shapes;
[`foreign_weights_problem`] names the weights that fit no tensor of the model, so the checkpoint can be passed over
like a truncated one.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable

from torch import nn
from transformers import PretrainedConfig
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ..checkpoint_files import (
    ResumeRefused,
    check_resumable,
    checkpoint_problem,
    safetensors_files,
    safetensors_shapes,
    weights_only_resume_note,
)

logger = logging.get_logger(__name__)

_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# The checkpoints that passed [`check_resumable`] in this process: (path, weights_only, its files' sizes and times).
_resumable: set[tuple] = set()


def _files_fingerprint(folder: str) -> tuple:
    """(name, size, modification time) of each file in ``folder``: any rewrite of a file changes it."""
    with os.scandir(folder) as entries:
        return tuple(
            sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in entries if entry.is_file())
        )


def check_resumable_once(checkpoint: str, weights_only: bool = False) -> str:
    """[`check_resumable`] unless ``checkpoint`` passed it in this process and none of its files changed since: the
    check reads every weight file, and the scripts make it before any data loads, then the trainer on ``train``."""
    path = os.path.abspath(checkpoint)
    if os.path.isdir(path) and (path, weights_only, _files_fingerprint(path)) in _resumable:
        return checkpoint
    check_resumable(checkpoint, weights_only)
    _resumable.add((path, weights_only, _files_fingerprint(path)))
    return checkpoint


def checkpoint_dirs(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of the ``checkpoint-N`` directories in ``output_dir``, highest step first."""
    steps = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(steps, reverse=True)


def last_complete_checkpoint(
    output_dir: str,
    weights_only: bool = False,
    below_step: int | None = None,
    problem_of: Callable[[str], str | None] | None = None,
) -> str | None:
    """The highest-step ``checkpoint-N`` in ``output_dir`` that can be loaded, or None; warnings name the others.

    ``Trainer`` writes ``trainer_state.json`` last, so a checkpoint without it was cut off (e.g. by SIGKILL) mid-save;
    one with a truncated or missing file (`modeling_gpa.checkpoint_files.checkpoint_problem`; with ``weights_only``
    the optimizer, scheduler and trainer state may be missing) is passed over the same way, and so is one for which
    ``problem_of(path)`` names a problem. ``below_step``: only checkpoints of lower steps.
    """
    if not os.path.isdir(output_dir):
        return None
    for step, path in checkpoint_dirs(output_dir):
        if below_step is not None and step >= below_step:
            continue
        problem = checkpoint_problem(path, weights_only)
        if problem is None:
            _resumable.add((os.path.abspath(path), weights_only, _files_fingerprint(path)))
            problem = problem_of(path) if problem_of else None
        if problem is None:
            return path
        logger.warning(f"Skipping checkpoint {path}, which cannot be loaded: {problem}.")
    return None


# Config fields that fix the shapes of a ViT / ViTMAE / GPA or Swin model's weights.
ARCHITECTURE_FIELDS = (
    "model_type",
    "image_size",
    "patch_size",
    "num_channels",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "decoder_hidden_size",
    "decoder_num_hidden_layers",
    "decoder_num_attention_heads",
    "decoder_intermediate_size",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "encoder_stride",
)


def architecture_mismatch(checkpoint: str, config: PretrainedConfig) -> str | None:
    """The fields of ``ARCHITECTURE_FIELDS`` where the checkpoint's ``config.json`` and ``config`` differ, as
    ``"hidden_size=32, patch_size=7 there, hidden_size=64, patch_size=4 here"``, or None (also without a
    ``config.json``)."""
    path = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        saved = json.load(file)
    current = config.to_dict()
    shared = [name for name in ARCHITECTURE_FIELDS if name in saved and name in current]
    differ = [name for name in shared if saved[name] != current[name]]
    if not differ:
        return None
    there = ", ".join(f"{name}={saved[name]}" for name in differ)
    here = ", ".join(f"{name}={current[name]}" for name in differ)
    return f"{there} there, {here} here"


def checkpoint_step(checkpoint: str) -> int | None:
    """N of a ``checkpoint-N`` directory, else None."""
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(checkpoint)))
    return int(match.group(1)) if match else None


def check_same_architecture(checkpoint: str, config: PretrainedConfig) -> None:
    """Raises a one-line [`ResumeRefused`] naming both shapes when ``checkpoint`` holds another model than
    ``config`` describes."""
    mismatch = architecture_mismatch(checkpoint, config)
    if mismatch:
        raise ResumeRefused(
            f"cannot resume from {checkpoint}: it holds another model than this run builds ({mismatch}); pass the "
            "model flags it was trained with (its config.json), or --overwrite_output_dir or another --output_dir "
            "to train this model from scratch"
        )


def foreign_weights_problem(checkpoint: str, model: nn.Module) -> str | None:
    """Why the checkpoint's safetensors weights are not ``model``'s, or None: each saved tensor must match a distinct
    tensor of ``model.state_dict()`` in shape (names differ: ``save_pretrained`` writes ViT weights under their Hub
    names). Headers only; a checkpoint without safetensors files (DeepSpeed, FSDP shards) is not checked."""
    available = Counter(tuple(tensor.shape) for tensor in model.state_dict().values())
    for path in safetensors_files(checkpoint):
        saved = safetensors_shapes(path)
        unmatched = []
        for name, shape in sorted(saved.items()):
            if available[shape] > 0:
                available[shape] -= 1
            else:
                unmatched.append((name, shape))
        if unmatched:
            name, shape = unmatched[0]
            return (
                f"{os.path.basename(path)} holds another model's weights ({len(unmatched)} of its {len(saved)} "
                f"tensors fit no weight of this model, e.g. {name} of shape {list(shape)})"
            )
    return None


__all__ = [
    "ARCHITECTURE_FIELDS",
    "architecture_mismatch",
    "check_resumable_once",
    "check_same_architecture",
    "checkpoint_dirs",
    "checkpoint_for_model",
    "checkpoint_step",
    "foreign_weights_problem",
    "last_complete_checkpoint",
]


def checkpoint_for_model(
    checkpoint: str, model: nn.Module, output_dir: str, chosen_in_output_dir: bool, weights_only: bool = False
) -> str:
    """The checkpoint to resume ``model``'s training from, given ``checkpoint``; raises a one-line
    [`ResumeRefused`] when there is none.

    ``checkpoint`` must load ([`check_resumable_once`]) and hold ``model``'s architecture ([`check_same_architecture`]).
    When its weights are another model's ([`foreign_weights_problem`]) and it was ``chosen_in_output_dir`` (not
    named by the user), it is skipped with a warning and the last earlier checkpoint of ``output_dir`` that loads
    ``model``'s weights is used. With ``weights_only`` a warning says what starts afresh.
    """
    check_resumable_once(checkpoint, weights_only)
    check_same_architecture(checkpoint, model.config)
    problem = foreign_weights_problem(checkpoint, model)
    if problem and not chosen_in_output_dir:
        raise ResumeRefused(
            f"cannot resume from {checkpoint}: {problem}; point --resume_from_checkpoint at a checkpoint of this model"
        )
    if problem:
        logger.warning(f"Skipping checkpoint {checkpoint}, which cannot be loaded: {problem}.")
        checkpoint = last_complete_checkpoint(
            output_dir, weights_only, checkpoint_step(checkpoint), lambda path: foreign_weights_problem(path, model)
        )
        if checkpoint is None:
            raise ResumeRefused(
                f"no checkpoint in {output_dir} holds this model's weights (the warnings above name them): pass "
                "--overwrite_output_dir to train from scratch there, or pick another --output_dir"
            )
    note = weights_only_resume_note(checkpoint) if weights_only else None
    if note:
        logger.warning(f"{note}.")
    return checkpoint
