"""Every mask strategy in one place: what scores the patches, and which generator turns the score into ViTMAE's noise.

| ``mask_method`` | score (B, n) | generator -> noise | adapted from |
|---|---|---|---|
| ``random`` | none | uniform noise: ViTMAE's own masking | MAE |
| ``block`` | none | ``block_masking.block_noise`` | BEiT |
| ``gpa`` | teacher's column sum: ``gpa.global_patch_attention`` | ``masking.scheduled_noise`` | GPA |
| ``cls_attention`` | teacher's CLS row: ``cls_attention.cls_patch_attention`` | ``masking.scheduled_noise`` | AttMask |
| ``hpm`` | EMA copy's predicted losses: ``teacher_predicted_losses`` | ``masking.scheduled_noise`` | HPM |

Every generator masks exactly MAE's count, ``n - int(n * (1 - mask_ratio))``, in every image, batched. ``gpa`` and
``cls_attention`` share the teacher, the block/head choice (few-shot selection included) and the schedule; only the
score differs (``gpa_queries``). HPM is Eq. 6 with a hard share and no soft one (``run_pretrain.py`` sets 0 -> 0.5).

To add a strategy: a module of pure tensor functions beside this one, its name in ``configuration_gpa.MASK_METHODS``,
a branch in [`mask_noise`] (and in ``GPAForPreTraining.mask_score`` if a model part scores). These modules stay flat
siblings of ``modeling_gpa.py``: ``save_pretrained`` copies them for ``trust_remote_code``, and transformers resolves
``from .x import`` to ``x.py`` beside the model file.
"""

from __future__ import annotations

import torch

from .block_masking import block_noise
from .masking import NO_SCHEDULE, MaskSchedule, scheduled_noise

UNSCORED = ("random", "block")


def mask_schedule(config) -> MaskSchedule:
    """The Eq. 6 schedule a ``GPAConfig`` masks with; ``random`` and ``block`` have none."""
    return NO_SCHEDULE if config.mask_method in UNSCORED else MaskSchedule.from_config(config)


def patch_grid(config, pixel_values: torch.Tensor) -> tuple[int, int]:
    """(rows, columns) of the patch grid of (B, C, H, W) images."""
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch


def mask_noise(
    config,
    score: torch.Tensor | None,
    pixel_values: torch.Tensor,
    progress: float | torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ViTMAE's ``noise`` (B, n) for a batch of ``pixel_values`` (B, C, H, W) under ``config.mask_method``.

    ``score``: (B, n) raw scores for the scored strategies, ``None`` for ``random`` and ``block``; ``progress`` in
    [0, 1] (a float or 0-d tensor). The patches with the largest noise are the masked ones.
    """
    rows, columns = patch_grid(config, pixel_values)
    batch, device = pixel_values.shape[0], pixel_values.device
    if config.mask_method == "random":
        return torch.rand(batch, rows * columns, generator=generator, device=device)
    if config.mask_method == "block":
        return block_noise(
            batch,
            (rows, columns),
            config.mask_ratio,
            min_patches=config.block_min_patches,
            min_aspect=config.block_min_aspect,
            generator=generator,
            device=device,
        )
    return scheduled_noise(score, config.mask_ratio, progress, mask_schedule(config), generator=generator)


__all__ = ["UNSCORED", "mask_noise", "mask_schedule", "patch_grid"]
