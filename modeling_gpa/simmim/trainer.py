"""SimMIM pretraining (``ViTForMaskedImageModeling``, ``SwinForMaskedImageModeling``) with GPA or random masks.

[`SimMIMMasker`] turns a batch of normalised images into ``bool_masked_pos``: ``run_mim.py``'s random mask, or the
soft-to-hard GPA mask of ``simmim.masking`` scored by a teacher ViT that runs only up to its scored block. Teachers:

- ``pretrained``: a frozen ViT / ViTMAE / GPA checkpoint, for any student (the paper's setting);
- ``ema``: a momentum copy of a ViT student's encoder, stepped after every optimizer step;
- ``self``: a ViT student's own encoder on the full image, without gradients.

A Swin student takes only the ``pretrained`` teacher: its windowed attention has no global patch-to-patch score.
[`SimMIMTrainer`] computes the mask on the device at every forward with the schedule progress of ``GPATrainer``.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn
from transformers import Trainer, TrainerCallback, ViTModel

from ..block_masking import block_mask
from ..configuration_gpa import ATTENTION_SCORED, GPA_QUERIES, GPA_SCORES
from ..masking import PAPER_SCHEDULE, MaskSchedule
from ..teacher import ema_update, freeze, load_pretrained_teacher, teacher_scores
from ..training.guards import TrainingGuardsMixin
from ..training.seeding import ProcessSeedsMixin
from ..training.streaming import StreamingTrainerMixin
from ..training.trainer import DeviceInputsMixin, GPATrainer
from .masking import (
    check_mask_geometry,
    expand_to_model_grid,
    random_bool_masked_pos,
    scheduled_bool_masked_pos,
    simmim_mask_count,
)

# The strategies that fit a SimMIM student (HPM's loss predictor is a decoder branch of MAE's model).
MASK_METHODS = ("gpa", "cls_attention", "block", "random")
SIMMIM_TEACHERS = ("pretrained", "ema", "self")
# The mask flags (modeling_gpa.training.masking_arguments) a SimMIM student takes.
SIMMIM_FIELDS = (
    "mask_method",
    "gpa_teacher",
    "gpa_teacher_name_or_path",
    "gpa_ema_momentum",
    "gpa_layer",
    "gpa_head",
    "gpa_score",
    "gpa_queries",
    "hard_ratio_start",
    "hard_ratio_end",
    "soft_ratio_start",
    "soft_ratio_end",
    "block_min_patches",
    "block_min_aspect",
)


@dataclasses.dataclass(frozen=True)
class SimMIMMaskSettings:
    """How ``bool_masked_pos`` is drawn. Geometry as ``run_mim.py``; GPA fields as ``GPAConfig``'s.

    ``layer`` / ``head`` index the teacher's blocks and heads (negative from the end; ``head=None``: all heads).
    ``schedule``: the Eq. 6 shares of the masked mask patches at progress 0 and 1.
    """

    image_size: int
    mask_patch_size: int = 32
    model_patch_size: int = 4
    mask_ratio: float = 0.6
    method: str = "gpa"
    teacher: str = "pretrained"
    teacher_name_or_path: str | None = None
    layer: int = -1
    head: int | None = -1
    score: str = "logits"
    queries: str = "all"
    schedule: MaskSchedule = PAPER_SCHEDULE
    ema_momentum: float = 0.999
    block_min_patches: int = 16
    block_min_aspect: float = 0.3

    def __post_init__(self) -> None:
        check_mask_geometry(self.image_size, self.mask_patch_size, self.model_patch_size)
        if isinstance(self.mask_ratio, bool) or not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={self.mask_ratio!r} is invalid; pass a number in (0, 1).")
        for name, value, allowed in (
            ("mask_method", self.method, MASK_METHODS),
            ("gpa_teacher", self.teacher, SIMMIM_TEACHERS),
            ("gpa_score", self.score, GPA_SCORES),
            ("gpa_queries", self.queries, GPA_QUERIES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is invalid; allowed values: {', '.join(allowed)}.")
        shares = dataclasses.astuple(self.schedule)
        if (
            not all(0.0 <= share <= 1.0 for share in shares)
            or shares[0] + shares[2] > 1 + 1e-9
            or shares[1] + shares[3] > 1 + 1e-9
        ):
            raise ValueError(
                f"schedule={self.schedule} is invalid; pass hard and soft shares in [0, 1] summing to <= 1."
            )
        if (self.method == "cls_attention") != (self.queries == "cls"):
            raise ValueError(
                f"gpa_queries={self.queries!r} is invalid with mask_method={self.method!r}; 'cls' goes with "
                "'cls_attention' and only with it."
            )
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise ValueError(f"gpa_ema_momentum={self.ema_momentum!r} is invalid; pass a number in [0, 1].")
        if self.method in ATTENTION_SCORED and self.teacher == "pretrained" and not self.teacher_name_or_path:
            raise ValueError(
                "gpa_teacher_name_or_path is required with gpa_teacher='pretrained'; pass a ViT, ViTMAE or GPA "
                "checkpoint directory or Hub id."
            )


def student_encoder(student: nn.Module) -> ViTModel:
    """The ``ViTModel`` of a ViT SimMIM student (``student.vit``), for the ``ema`` and ``self`` teachers."""
    encoder = getattr(student, "vit", None)
    if not isinstance(encoder, ViTModel):
        raise ValueError(
            f"gpa_teacher 'ema' and 'self' need a ViT student (ViTForMaskedImageModeling); got {type(student).__name__}"
            ": pass --gpa_teacher pretrained with --gpa_teacher_name_or_path."
        )
    return encoder


class SimMIMMasker(nn.Module):
    """``bool_masked_pos`` for a batch of a SimMIM student; holds the teacher (if any) as a submodule."""

    def __init__(self, settings: SimMIMMaskSettings, student: nn.Module, num_channels: int) -> None:
        super().__init__()
        self.settings = settings
        self.teacher: nn.Module | None = None
        if settings.method not in ATTENTION_SCORED:
            return
        if settings.teacher == "pretrained":
            self.teacher = load_pretrained_teacher(settings.teacher_name_or_path)
        elif settings.teacher == "ema":
            self.teacher = freeze(copy.deepcopy(student_encoder(student)))
        encoder = self.teacher if self.teacher is not None else student_encoder(student)
        if encoder.config.num_channels != num_channels:
            raise ValueError(
                f"gpa_teacher_name_or_path={settings.teacher_name_or_path!r} takes {encoder.config.num_channels}-"
                f"channel images but the student takes {num_channels}; pass a teacher with the student's channels."
            )
        # Resolved once, so a bad block or head fails here rather than at the first step.
        num_layers, num_heads = len(encoder.layers), encoder.config.num_attention_heads
        if not -num_layers <= settings.layer < num_layers:
            raise ValueError(f"gpa_layer={settings.layer} is out of range for a teacher with {num_layers} blocks.")
        if settings.head is not None and not -num_heads <= settings.head < num_heads:
            raise ValueError(f"gpa_head={settings.head} is out of range for a teacher with {num_heads} heads.")
        self.layer = settings.layer % num_layers

    def use_block_and_head(self, layer: int, head: int | None) -> None:
        """Scores with the teacher's block ``layer`` and ``head`` from now on (e.g. after few-shot selection)."""
        self.settings = dataclasses.replace(self.settings, layer=layer, head=head)
        self.layer = layer

    def teacher_encoder(self, student: nn.Module) -> nn.Module:
        return self.teacher if self.teacher is not None else student_encoder(student)

    @torch.no_grad()
    def scores(self, pixel_values: torch.Tensor, student: nn.Module) -> torch.Tensor:
        """(B, C, H, W) normalised images -> (B, n_teacher) raw GPA of the teacher's block ``layer`` and ``head``."""
        encoder = self.teacher_encoder(student)
        if self.teacher is not None:
            self.teacher.to(pixel_values.device)
        teacher_size = encoder.config.image_size
        teacher_size = teacher_size if isinstance(teacher_size, int) else teacher_size[0]
        return teacher_scores(
            encoder,
            pixel_values,
            layer=self.layer,
            head=self.settings.head,
            score=self.settings.score,
            queries=self.settings.queries,
            interpolate_pos_encoding=pixel_values.shape[-1] != teacher_size,
        )

    @torch.no_grad()
    def forward(
        self,
        pixel_values: torch.Tensor,
        progress: float | torch.Tensor,
        student: nn.Module,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, C, H, W) -> (B, (image_size / model_patch_size)**2) bool ``bool_masked_pos`` at ``progress``."""
        s = self.settings
        geometry = dict(
            image_size=s.image_size,
            mask_patch_size=s.mask_patch_size,
            model_patch_size=s.model_patch_size,
            mask_ratio=s.mask_ratio,
            generator=generator,
        )
        if s.method == "random":
            return random_bool_masked_pos(len(pixel_values), device=pixel_values.device, **geometry)
        if s.method == "block":
            grid = s.image_size // s.mask_patch_size
            count = simmim_mask_count(grid * grid, s.mask_ratio)
            blocks, _, _ = block_mask(
                len(pixel_values),
                (grid, grid),
                count,
                min_patches=s.block_min_patches,
                min_aspect=s.block_min_aspect,
                generator=generator,
                device=pixel_values.device,
            )
            return expand_to_model_grid(blocks, s.mask_patch_size // s.model_patch_size)
        scores = self.scores(pixel_values, student)
        return scheduled_bool_masked_pos(scores, progress=progress, schedule=s.schedule, **geometry)

    @torch.no_grad()
    def update_teacher(self, student: nn.Module) -> None:
        """One EMA step of the ``ema`` teacher towards the student's encoder; nothing for other teachers."""
        if self.settings.method in ATTENTION_SCORED and self.settings.teacher == "ema":
            ema_update(self.teacher, student_encoder(student), self.settings.ema_momentum)


class EMAMaskTeacherCallback(TrainerCallback):
    """Steps the masker's EMA teacher once per optimizer step (``on_step_end`` follows ``optimizer.step()``)."""

    def __init__(self, masker: SimMIMMasker) -> None:
        self.masker = masker

    def on_step_end(self, args, state, control, model: nn.Module | None = None, **kwargs):
        self.masker.update_teacher(extract_model_from_parallel(model))


class SimMIMTrainer(ProcessSeedsMixin, StreamingTrainerMixin, DeviceInputsMixin, TrainingGuardsMixin, Trainer):
    """[`Trainer`] for ``*ForMaskedImageModeling`` students: ``bool_masked_pos`` from a [`SimMIMMasker`] per forward.

    The schedule's progress is ``GPATrainer``'s (``global_step / max_steps``, or by epoch with
    ``--mask_schedule epoch``); uint8 batches are normalised on the device before the teacher sees them; masks are
    drawn from the process's own RNG (seeded ``seed + rank``, saved in every checkpoint). The model's
    loss is a per-batch mean, so it is divided by the gradient accumulation steps. With the ``ema`` teacher the copy
    restarts from the student's weights when training resumes from a checkpoint.
    """

    loss_is_scaled_for_ga = False
    mask_progress = GPATrainer.mask_progress

    def __init__(self, *args, masker: SimMIMMasker, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.masker = masker
        self.add_callback(EMAMaskTeacherCallback(masker))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Forward with the mask of the current progress."""
        inputs = {k: v for k, v in inputs.items() if k in ("pixel_values", "bool_masked_pos")}
        if "bool_masked_pos" not in inputs:
            student = extract_model_from_parallel(model)
            pixel_values = inputs["pixel_values"]
            progress = self.mask_progress()
            inputs["bool_masked_pos"] = self.masker(pixel_values, progress, student)
        outputs = model(**inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss


__all__ = [
    "EMAMaskTeacherCallback",
    "MASK_METHODS",
    "SIMMIM_FIELDS",
    "SIMMIM_TEACHERS",
    "SimMIMMaskSettings",
    "SimMIMMasker",
    "SimMIMTrainer",
    "student_encoder",
]
