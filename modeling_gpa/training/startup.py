"""The checks a run makes before it trains, each once: every node sees ``--output_dir``, the checkpoint to resume from
can be loaded and holds this model (`modeling_gpa.training.resume`), and it continues at the run's total batch.

run_pretrain.py and run_mim.py make the first two before any data loads
(`modeling_gpa.training.script.checkpoint_to_resume`); [`StartupChecksMixin`] makes them in ``Trainer.train`` for a
trainer used on its own, and those that need the model. A check that passed in this process is not made again: the
shared-storage check for the same folder (a collective: every process passes it or none, so all skip it alike), the
loadability check for the same checkpoint while none of its files changed
(`modeling_gpa.training.resume.check_resumable_once`: it reads every weight file).
"""

from __future__ import annotations

import os

from accelerate.utils import extract_model_from_parallel

from .distributed import BatchGeometryCallback, check_output_dir_is_shared, check_resume_geometry
from .resume import checkpoint_for_model, last_complete_checkpoint

# The folders whose shared-storage check passed in this process.
_shared_output_dirs: set[str] = set()


def check_output_dir_is_shared_once(output_dir: str) -> None:
    """[`check_output_dir_is_shared`] unless it already passed for ``output_dir`` in this process. Collective call."""
    path = os.path.abspath(output_dir)
    if path not in _shared_output_dirs:
        check_output_dir_is_shared(output_dir)
        _shared_output_dirs.add(path)


class StartupChecksMixin:
    """[`Trainer`] mixin: the start-up checks above in ``train``, and the run's batch geometry recorded in every
    checkpoint ([`BatchGeometryCallback`]) so that a resume can check it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(BatchGeometryCallback())

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``; ``resume_from_checkpoint=True`` takes the last checkpoint in ``output_dir`` that loads.

        The checkpoint must hold this model ([`checkpoint_for_model`]: one in ``output_dir`` with another model's
        weights is passed over for an earlier one). On several nodes, ``output_dir`` must be shared storage; a resume
        at another total batch than the checkpoint's is refused (`modeling_gpa.training.distributed`). Both raise
        [`DistributedSetupError`] with a one-line message; a checkpoint that cannot be loaded raises a one-line
        [`ResumeRefused`] or ``ValueError``.
        """
        check_output_dir_is_shared_once(self.args.output_dir)
        weights_only = getattr(self.args, "resume_from_weights_only", False)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, weights_only)
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"no complete checkpoint in {self.args.output_dir} to resume from: train without "
                    "--resume_from_checkpoint or point it at a checkpoint directory."
                )
        if isinstance(resume_from_checkpoint, str):
            resume_from_checkpoint = checkpoint_for_model(
                resume_from_checkpoint,
                extract_model_from_parallel(self.model),
                self.args.output_dir,
                chosen_in_output_dir=self._chosen_in_output_dir(resume_from_checkpoint),
                weights_only=weights_only,
            )
            check_resume_geometry(resume_from_checkpoint, self.args)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _chosen_in_output_dir(self, checkpoint: str) -> bool:
        """Whether ``checkpoint`` sits in ``output_dir`` and --resume_from_checkpoint did not name it."""
        if self.args.resume_from_checkpoint is not None or not self.args.output_dir:
            return False
        parent = os.path.dirname(os.path.abspath(checkpoint))
        return parent == os.path.abspath(self.args.output_dir)


__all__ = ["StartupChecksMixin", "check_output_dir_is_shared_once"]
