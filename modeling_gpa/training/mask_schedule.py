"""The soft-to-hard schedule's progress as a [`Trainer`] sees it, shared by `GPATrainer` and `SimMIMTrainer`."""

from __future__ import annotations

import math


class MaskScheduleMixin:
    """[`Trainer`] mixin: [`mask_progress`], the schedule's progress in [0, 1] at the current step.

    ``--mask_schedule`` (an argument of `GPATrainingArguments`; 'step' when the arguments have none) picks the
    granularity. A streamed train split ([`StreamingTrainerMixin`]) counts its epochs in examples.
    """

    def mask_progress(self) -> float:
        """Schedule progress in [0, 1]: ``global_step / max_steps``, or completed epochs / epochs ('epoch')."""
        state = self.state
        if not state.max_steps:
            return 0.0
        if getattr(self.args, "mask_schedule", "step") == "epoch" and self.streams_training_data:
            # A stream has no length: its epochs are counted in examples (the script requires their number).
            examples = self.train_dataset.num_examples
            epochs_done = state.global_step * self.args.total_train_batch_size // examples
            return min(epochs_done / self.args.num_train_epochs, 1.0)
        if getattr(self.args, "mask_schedule", "step") == "epoch":
            # Trainer rounds a fractional --num_train_epochs up in its state; the schedule runs over the real count.
            epochs = self.args.num_train_epochs if self.args.max_steps <= 0 else state.num_train_epochs
            # Float epochs land on whole numbers at epoch ends; the epsilon absorbs rounding below them.
            return min(math.floor((state.epoch or 0.0) + 1e-6) / epochs, 1.0)
        return min(state.global_step / state.max_steps, 1.0)


__all__ = ["MaskScheduleMixin"]
