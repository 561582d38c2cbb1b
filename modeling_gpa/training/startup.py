"""The checks a run makes before it trains, each once: every node sees ``--output_dir``, the checkpoint to resume from
can be loaded, and it continues at the run's total batch.

run_pretrain.py and run_mim.py make the first two before any data loads
(`modeling_gpa.training.script.checkpoint_to_resume`); [`StartupChecksMixin`] makes them in ``Trainer.train`` for a
trainer used on its own. A check that passed in this process is not made again: the shared-storage check for the same
folder (a collective: every process passes it or none, so all skip it alike), the loadability check for the same
checkpoint while none of its files changed (it reads every weight file).
"""

from __future__ import annotations

import os
import re

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ..checkpoint_files import check_resumable, checkpoint_problem
from .distributed import BatchGeometryCallback, check_output_dir_is_shared, check_resume_geometry

logger = logging.get_logger(__name__)

_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# The checks this process passed: ("shared", folder) and ("resumable", checkpoint, its files' sizes and times).
_passed: set[tuple] = set()


def _files_fingerprint(folder: str) -> tuple:
    """(name, size, modification time) of each file in ``folder``: any rewrite of a file changes it."""
    with os.scandir(folder) as entries:
        return tuple(
            sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in entries if entry.is_file())
        )


def check_output_dir_is_shared_once(output_dir: str) -> None:
    """[`check_output_dir_is_shared`] unless it already passed for ``output_dir`` in this process. Collective call."""
    key = ("shared", os.path.abspath(output_dir))
    if key not in _passed:
        check_output_dir_is_shared(output_dir)
        _passed.add(key)


def check_resumable_once(checkpoint: str) -> str:
    """[`check_resumable`] unless ``checkpoint`` already passed it in this process and none of its files changed."""
    path = os.path.abspath(checkpoint)
    if os.path.isdir(path) and ("resumable", path, _files_fingerprint(path)) in _passed:
        return checkpoint
    check_resumable(checkpoint)
    _passed.add(("resumable", path, _files_fingerprint(path)))
    return checkpoint


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The highest-step ``checkpoint-N`` in ``output_dir`` that can be loaded, or None; warnings name the others.

    ``Trainer`` writes ``trainer_state.json`` last, so a checkpoint without it was cut off (e.g. by SIGKILL) mid-save;
    one with a truncated file (`modeling_gpa.checkpoint_files.checkpoint_problem`) is passed over the same way.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            steps.append((int(match.group(1)), name))
    for _, name in sorted(steps, reverse=True):
        path = os.path.join(output_dir, name)
        problem = checkpoint_problem(path)
        if problem is None:
            _passed.add(("resumable", os.path.abspath(path), _files_fingerprint(path)))
            return path
        logger.warning(f"Skipping checkpoint {path}, which cannot be loaded: {problem}.")
    return None


class StartupChecksMixin:
    """[`Trainer`] mixin: the start-up checks above in ``train``, and the run's batch geometry recorded in every
    checkpoint ([`BatchGeometryCallback`]) so that a resume can check it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(BatchGeometryCallback())

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``; ``resume_from_checkpoint=True`` takes the last checkpoint in ``output_dir`` that loads.

        On several nodes, ``output_dir`` must be shared storage; a resume at another total batch than the checkpoint's
        is refused (`modeling_gpa.training.distributed`). Both raise [`DistributedSetupError`] with a one-line message;
        a checkpoint that cannot be loaded raises a one-line ``ValueError``.
        """
        check_output_dir_is_shared_once(self.args.output_dir)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"no complete checkpoint in {self.args.output_dir} to resume from: train without "
                    "--resume_from_checkpoint or point it at a checkpoint directory."
                )
        elif isinstance(resume_from_checkpoint, str):
            check_resumable_once(resume_from_checkpoint)
        if resume_from_checkpoint:
            check_resume_geometry(resume_from_checkpoint, self.args)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)


__all__ = [
    "StartupChecksMixin",
    "check_output_dir_is_shared_once",
    "check_resumable_once",
    "last_complete_checkpoint",
]
