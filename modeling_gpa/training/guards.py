"""Guards that keep a training run from ending with exit 0 and a wrong model.

[`TrainingGuardsMixin`] (a [`Trainer`] mixin, used by `GPATrainer` and `SimMIMTrainer`):

- **Finite-loss guard.** After the gradients of an optimizer step are reduced (and clipped), a non-finite loss of any
  of its micro-batches or a non-finite gradient norm skips the update: the gradients are dropped, so the optimizer
  changes neither the weights nor its moments (the step still counts: ``global_step`` and the learning-rate schedule
  move on). Each skip is logged with its step and counted (``train_nonfinite_steps``); ``max_nonfinite_steps`` skips
  in a row stop the run with [`NonFiniteTrainingError`], one line naming the step.
- **No non-finite weights on disk.** ``save_model`` (checkpoints and the final model) refuses weights holding NaN or
  inf with [`NonFiniteTrainingError`], so nothing downstream (model card, push, evaluation) ever sees them.
- **SIGTERM** (what preemptible cloud GPUs and schedulers send before killing a job): the step that is running
  finishes (on several processes: the next multiple of [`SIGTERM_CHECK_STEPS`] steps, or the last step, where the
  processes agree on it), a checkpoint is written and training stops with [`TrainingInterrupted`]; the scripts exit
  143 without saving a final model, writing a model card or pushing. The same command resumes from the checkpoint.
  DataLoader workers ignore SIGTERM, so a signal to the whole process group does not kill them under the step.
- **Space.** Before training, an ``output_dir`` with less free space than about one checkpoint fails in one line.
- ``--hub_token`` never reaches the ``training_args.bin`` that every save writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Iterator

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn
from torch.utils.data import DataLoader
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ..finite_weights import nonfinite_tensors
from .worker_signals import stop_persistent_workers, workers_ignore_sigterm

logger = logging.get_logger(__name__)

# Exit status of a process ended by SIGTERM (128 + 15): schedulers read it as "terminated", not "failed".
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
# Bytes per weight byte of one checkpoint: the weights and AdamW's two moments.
CHECKPOINT_BYTES_PER_WEIGHT_BYTE = 3
# Optimizer steps between two agreements of the processes on a SIGTERM. An agreement is an all-reduce whose result
# the host reads, so on GPUs it waits for the step's kernels and the next step's launches stop overlapping them
# (benchmarks/benchmark_speed.py measures it); one process alone reads its flag at every step, for free.
SIGTERM_CHECK_STEPS = 10


class NonFiniteTrainingError(RuntimeError):
    """Training produced NaN or inf (loss, gradients or weights); the message fits on one line and says what to do."""


class NotEnoughSpace(OSError):
    """``output_dir`` has less free space than one checkpoint takes; the message fits on one line."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM stopped training after writing a checkpoint; the message names it."""

    exit_code = SIGTERM_EXIT_CODE


def check_finite_weights(module: nn.Module, where: str, what_to_do: str) -> None:
    """Raises [`NonFiniteTrainingError`] naming ``where`` and the first bad tensor when any weight is NaN or inf."""
    bad = nonfinite_tensors(module)
    if bad:
        total = sum(1 for tensor in module.state_dict().values() if tensor.is_floating_point())
        raise NonFiniteTrainingError(
            f"{where} has non-finite weights (NaN or inf) in {len(bad)} of {total} tensors (first: {bad[0]}): "
            f"{what_to_do}"
        )


class TrainingGuardsMixin:
    """[`Trainer`] mixin: finite-loss guard, no non-finite saves, checkpoint on SIGTERM, free space, no stored
    Hub token. The arguments may set ``max_nonfinite_steps`` (default 10)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.nonfinite_steps = 0
        self._nonfinite_in_a_row = 0
        self._nonfinite_loss: torch.Tensor | None = None
        self._sigterm = threading.Event()
        self._sigterm_saved = False
        self._sigterm_checked_step: int | None = None

    # ---- finite-loss guard ---------------------------------------------------------------------------------------

    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        """``Trainer.training_step``; notes (on the device, without a sync) whether the micro-batch loss was finite."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        bad = ~torch.isfinite(loss.detach()).all()
        self._nonfinite_loss = bad if self._nonfinite_loss is None else self._nonfinite_loss | bad
        return loss

    def _get_grad_norm(self, model: nn.Module, grad_norm=None):
        """``Trainer``'s gradient norm, then [`skip_nonfinite_step`]: ``Trainer`` calls this once per optimizer step,
        after the gradients' reduction and clipping and right before ``optimizer.step()`` (Transformers 5.17-5.25)."""
        grad_norm = super()._get_grad_norm(model, grad_norm)
        self.skip_nonfinite_step(model)
        return grad_norm

    def skip_nonfinite_step(self, model: nn.Module) -> None:
        """Called between the gradients' reduction (and clipping) and ``optimizer.step()``: drops the gradients when
        they or a loss of the step are not finite, so the optimizer step that follows changes nothing. One host sync;
        raises [`NonFiniteTrainingError`] at ``max_nonfinite_steps`` in a row."""
        if self.is_deepspeed_enabled:  # DeepSpeed keeps the gradients itself; its own overflow check applies
            return
        device = self.accelerator.device
        grads = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        grad_norm = (
            torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())
            if grads
            else torch.zeros((), device=device)
        )
        bad = ~torch.isfinite(grad_norm.to(device))
        if self._nonfinite_loss is not None:
            bad = bad | self._nonfinite_loss.to(device)
        self._nonfinite_loss = None
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad.float(), reduction="max") > 0
        if not bool(bad):
            self._nonfinite_in_a_row = 0
            return
        for parameter in model.parameters():
            parameter.grad = None
        self.nonfinite_steps += 1
        self._nonfinite_in_a_row += 1
        step = self.state.global_step + 1
        limit = getattr(self.args, "max_nonfinite_steps", 10)
        logger.warning(
            f"Step {step}: the loss or gradients are not finite (gradient norm {float(grad_norm):g}); the update "
            f"was skipped ({self._nonfinite_in_a_row} in a row, training stops at {limit})."
        )
        if self._nonfinite_in_a_row >= limit:
            first = step - self._nonfinite_in_a_row + 1
            raise NonFiniteTrainingError(
                f"training stopped at step {step}: the loss or gradients were NaN or inf at {self._nonfinite_in_a_row} "
                f"optimizer steps in a row (steps {first}-{step}, each skipped); lower "
                "--learning_rate (or set --max_grad_norm), then rerun to resume from the last checkpoint"
            )

    # ---- saving ----------------------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``, refusing non-finite weights, without the Hub token in ``training_args.bin``."""
        where = output_dir or self.args.output_dir
        check_finite_weights(
            extract_model_from_parallel(self.model),
            f"the model to save to {where}",
            "nothing was saved; lower --learning_rate and resume from the last checkpoint",
        )
        with self._without_hub_token():
            super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        with self._without_hub_token():
            super()._save_checkpoint(model, trial)

    @contextlib.contextmanager
    def _without_hub_token(self) -> Iterator[None]:
        """``args.hub_token`` is None inside (``Trainer`` pickles the arguments into every save), restored after."""
        token = self.args.hub_token
        self.args.hub_token = None
        try:
            yield
        finally:
            self.args.hub_token = token

    # ---- training: SIGTERM, space -----------------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """``Trainer``'s, with workers that leave SIGTERM to the main process (`training.worker_signals`)."""
        return workers_ignore_sigterm(super().get_train_dataloader())

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        """``Trainer``'s, with workers that leave SIGTERM to the main process."""
        return workers_ignore_sigterm(super().get_eval_dataloader(eval_dataset))

    def sigterm_received(self) -> bool:
        """Whether SIGTERM reached this process, or (distributed) any process. Collective call when distributed."""
        received = self._sigterm.is_set()
        if self.accelerator.num_processes > 1:
            flag = torch.tensor(float(received), device=self.accelerator.device)
            received = bool(self.accelerator.reduce(flag, reduction="max") > 0)
        return received

    def _maybe_log_save_evaluate(self, *args, **kwargs) -> None:
        """``Trainer``'s log, evaluate and save at the end of each step (and epoch); a SIGTERM on any process turns it
        into: save a checkpoint and stop. Checked once per step, every [`SIGTERM_CHECK_STEPS`] on several processes."""
        step = self.state.global_step
        due = self.accelerator.num_processes == 1 or step % SIGTERM_CHECK_STEPS == 0
        if due and step != self._sigterm_checked_step and self.sigterm_received():
            self.control.should_save = True
            self.control.should_training_stop = True
            self._sigterm_saved = True
        self._sigterm_checked_step = step
        super()._maybe_log_save_evaluate(*args, **kwargs)

    @contextlib.contextmanager
    def _checkpoint_on_sigterm(self) -> Iterator[None]:
        """SIGTERM sets a flag instead of killing the process (the main thread only can install handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        several = self.accelerator.num_processes > 1
        when = f"the next step that is a multiple of {SIGTERM_CHECK_STEPS}" if several else "this step"

        def handler(signum, frame):
            self._sigterm.set()
            logger.warning(f"SIGTERM received: saving a checkpoint at the end of {when}, then stopping.")

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train`` with the guards above; raises [`TrainingInterrupted`] when SIGTERM stopped it."""
        self.check_free_space()
        self.nonfinite_steps = self._nonfinite_in_a_row = 0
        self._sigterm.clear()
        self._sigterm_saved, self._sigterm_checked_step = False, None
        with self._checkpoint_on_sigterm():
            output = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        if self.sigterm_received():
            if not self._sigterm_saved:
                # SIGTERM came after the last step (during the final evaluation or logging): save that step now.
                self._save_checkpoint(self.model, trial=None)
            stop_persistent_workers()
            checkpoint = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            raise TrainingInterrupted(
                f"stopped by SIGTERM at step {self.state.global_step} of {self.state.max_steps}: saved {checkpoint}; "
                "no final model, model card or push. Run the same command again to resume from it"
            )
        if self.nonfinite_steps:
            output.metrics["train_nonfinite_steps"] = self.nonfinite_steps
        return output

    def check_free_space(self) -> None:
        """Raises [`NotEnoughSpace`] when ``output_dir`` has less free space than about one checkpoint."""
        output_dir = self.args.output_dir
        if not self.args.should_save or not output_dir:
            return
        existing = os.path.abspath(output_dir)
        while not os.path.isdir(existing):  # the disk it will be created on
            existing = os.path.dirname(existing)
        model = extract_model_from_parallel(self.model)
        weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        needed = weight_bytes * CHECKPOINT_BYTES_PER_WEIGHT_BYTE
        free = shutil.disk_usage(existing).free
        if free < needed:
            raise NotEnoughSpace(
                f"--output_dir {output_dir} has {free / 2**20:.1f} MiB free but a checkpoint of this model takes "
                f"about {needed / 2**20:.1f} MiB: free some space or pick another --output_dir"
            )


__all__ = [
    "SIGTERM_CHECK_STEPS",
    "NonFiniteTrainingError",
    "NotEnoughSpace",
    "TrainingGuardsMixin",
    "TrainingInterrupted",
    "check_finite_weights",
]
