"""Few-shot attention selection repeated during training, for teachers that change as the student learns.

A ``self`` or ``ema`` teacher is the student (or its average): selection before training scores a randomly
initialised network, and the head it picks need not keep finding objects once the weights move. This callback
re-scores every (block, head) on the same few annotated images every ``every_steps`` optimizer steps and writes the
best into ``config.gpa_layer`` / ``gpa_head``, so the masks follow whichever head currently ranks the object first.
One selection costs one teacher pass over the annotated images (milliseconds for 10 small images).
"""

from __future__ import annotations

import json
import logging
import os

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import TrainerCallback

from ..head_selection import candidate_name, select_attention_head

logger = logging.getLogger(__name__)


class HeadReselectionCallback(TrainerCallback):
    """Re-runs ``select_attention_head`` on fixed annotated images every ``every_steps`` optimizer steps.

    Args:
        pixel_values: (B, C, H, W) normalised annotated images (the selection images).
        object_patches: (B, n) bool ground-truth object patches.
        every_steps: how often, in optimizer steps; the selection also runs when training (re)starts.
        output_dir: where ``head_reselection.json`` (every selection: step, block, head, recall, average
            precision) is written at the end of training; ``None`` writes nothing.
    """

    def __init__(
        self, pixel_values: torch.Tensor, object_patches: torch.Tensor, every_steps: int, output_dir: str | None
    ):
        if every_steps < 1:
            raise ValueError(f"every_steps={every_steps} is invalid; pass a positive number of optimizer steps.")
        self.pixel_values, self.object_patches = pixel_values, object_patches
        self.every_steps, self.output_dir = every_steps, output_dir
        self.history: list[dict] = []

    def reselect(self, model: torch.nn.Module, step: int) -> None:
        """Scores every candidate of ``model``'s teacher now and writes the best into its config."""
        model = extract_model_from_parallel(model)
        selection = select_attention_head(model, self.pixel_values, self.object_patches)
        previous = (model.config.gpa_layer, model.config.gpa_head)
        model.config.gpa_layer, model.config.gpa_head = selection.best_layer, selection.best_head
        self.history.append(
            {
                "step": step,
                "layer": selection.best_layer,
                "head": selection.best_head,
                "recall": selection.best_recall,
                "average_precision": selection.best_average_precision,
                "recall_ceiling": selection.recall_ceiling,
                "object_coverage": selection.object_coverage,
            }
        )
        if previous != (selection.best_layer, selection.best_head):
            logger.info(
                f"step {step}: the teacher now scores with {candidate_name(selection.best_layer, selection.best_head)}"
                f" (object recall {selection.best_recall:.3f}, average precision "
                f"{selection.best_average_precision:.3f})"
            )

    def on_train_begin(self, args, state, control, model: torch.nn.Module | None = None, **kwargs):
        self.reselect(model, state.global_step)

    def on_step_end(self, args, state, control, model: torch.nn.Module | None = None, **kwargs):
        if state.global_step % self.every_steps == 0:
            self.reselect(model, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.output_dir is None or not state.is_world_process_zero:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "head_reselection.json"), "w", encoding="utf-8") as handle:
            json.dump({"every_steps": self.every_steps, "selections": self.history}, handle, indent=2)


__all__ = ["HeadReselectionCallback"]
