"""GPA masks for SimMIM models: teacher scores -> ``bool_masked_pos`` for ``ViTForMaskedImageModeling`` and
``SwinForMaskedImageModeling``.

SimMIM (Hugging Face's ``run_mim.py``) masks on a coarse grid of ``mask_patch_size`` pixels and repeats each mask
patch over the ``(mask_patch_size / model_patch_size)**2`` model patches it covers. Here the teacher's patch scores
are pooled to that mask grid, the soft-to-hard schedule of [`masking.mask_groups`] picks exactly as many mask patches as
``run_mim.py``'s random ``MaskGenerator`` does, and the result is expanded to the student's patch grid.

Pooling is the *area mean*: a mask patch's score is the mean of the teacher scores over its pixels, each teacher
patch weighted by the share of the mask patch it covers. It works whether the teacher's grid is finer than the mask
grid (a mean over the teacher patches inside), coarser (the covering teacher patch's score) or neither divides the
other, and keeps a score's scale (min-max normalisation follows anyway). A sum would rank the same when every mask
patch covers the same number of teacher patches; a max would favour mask patches that only graze the object.
"""

from __future__ import annotations

import math

import torch

from ..masking import KEPT, PAPER_SCHEDULE, MaskSchedule, mask_groups


def check_mask_geometry(image_size: int, mask_patch_size: int, model_patch_size: int) -> None:
    """``run_mim.py``'s rule: ``image_size`` divisible by ``mask_patch_size``, which is divisible by the model's."""
    for name, value in (
        ("image_size", image_size),
        ("mask_patch_size", mask_patch_size),
        ("model_patch_size", model_patch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid; pass a positive integer number of pixels.")
    if image_size % mask_patch_size:
        raise ValueError(
            f"mask_patch_size={mask_patch_size} is invalid for image_size={image_size}; pass a divisor of image_size."
        )
    if mask_patch_size % model_patch_size:
        raise ValueError(
            f"mask_patch_size={mask_patch_size} is invalid for model_patch_size={model_patch_size}; pass a multiple "
            "of the model's patch size."
        )


def _check_mask_ratio(mask_ratio: float) -> None:
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio!r} is invalid; pass a number in (0, 1).")


def simmim_mask_count(token_count: int, mask_ratio: float) -> int:
    """Masked mask patches per image, as ``run_mim.py``'s ``MaskGenerator``: ``ceil(token_count * mask_ratio)``."""
    return int(math.ceil(token_count * mask_ratio))


def area_pool_matrix(source: int, target: int) -> torch.Tensor:
    """(target, source) float64 weights of a 1-D area mean from ``source`` cells to ``target`` cells.

    Row ``i`` holds the share of output cell ``i`` (the interval ``[i, i+1) * source / target``) that each input
    cell covers; rows sum to 1. Computed in integer units of ``1 / (source * target)``, so the weights are exact.
    """
    out_start = torch.arange(target, dtype=torch.int64).unsqueeze(1) * source
    in_start = torch.arange(source, dtype=torch.int64).unsqueeze(0) * target
    overlap = (torch.minimum(out_start + source, in_start + target) - torch.maximum(out_start, in_start)).clamp_min(0)
    return overlap.double() / source


def pool_scores(scores: torch.Tensor, mask_grid: int) -> torch.Tensor:
    """(B, n) scores on a square teacher grid -> (B, mask_grid**2) area means on the mask grid, row-major, float32."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be (batch, num_patches); got shape {tuple(scores.shape)}.")
    side = math.isqrt(scores.shape[1])
    if side * side != scores.shape[1]:
        raise ValueError(f"scores has {scores.shape[1]} patches per image; pass scores of a square patch grid.")
    weights = area_pool_matrix(side, mask_grid).to(device=scores.device)
    grid = scores.double().view(-1, side, side)
    return torch.einsum("ij,bjk,lk->bil", weights, grid, weights).reshape(-1, mask_grid * mask_grid).float()


def scheduled_mask_patch_groups(
    scores: torch.Tensor,
    *,
    image_size: int,
    mask_patch_size: int,
    model_patch_size: int,
    mask_ratio: float,
    progress: float | torch.Tensor,
    schedule: MaskSchedule = PAPER_SCHEDULE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, n_teacher) raw scores -> (B, (image_size / mask_patch_size)**2) groups on the mask grid.

    Each mask patch is ``KEPT``, ``HARD``, ``SOFT`` or ``RANDOM`` (see ``masking``); exactly
    [`simmim_mask_count`] of them are masked in every image, the Eq. 6 fractions of that count at ``progress``.
    """
    check_mask_geometry(image_size, mask_patch_size, model_patch_size)
    _check_mask_ratio(mask_ratio)
    mask_grid = image_size // mask_patch_size
    token_count = mask_grid * mask_grid
    pooled = pool_scores(scores, mask_grid)
    count = simmim_mask_count(token_count, mask_ratio)
    return mask_groups(pooled, count, progress, schedule, generator=generator)


def random_mask_patches(
    batch_size: int,
    *,
    image_size: int,
    mask_patch_size: int,
    model_patch_size: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, mask_grid**2) bool: ``run_mim.py``'s random mask, [`simmim_mask_count`] uniform mask patches per image."""
    check_mask_geometry(image_size, mask_patch_size, model_patch_size)
    _check_mask_ratio(mask_ratio)
    token_count = (image_size // mask_patch_size) ** 2
    uniform = torch.rand(batch_size, token_count, generator=generator, device=device)
    rank = uniform.argsort(dim=-1).argsort(dim=-1)
    return rank < simmim_mask_count(token_count, mask_ratio)


def expand_to_model_grid(mask_patches: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, g*g) per mask patch -> (B, (g*scale)**2) per model patch, row-major: each repeated over a scale² block."""
    side = math.isqrt(mask_patches.shape[1])
    grid = mask_patches.view(-1, side, side)
    return grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2).flatten(1)


def scheduled_bool_masked_pos(
    scores: torch.Tensor,
    *,
    image_size: int,
    mask_patch_size: int,
    model_patch_size: int,
    mask_ratio: float,
    progress: float | torch.Tensor,
    schedule: MaskSchedule = PAPER_SCHEDULE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, n_teacher) raw teacher scores -> (B, (image_size / model_patch_size)**2) bool ``bool_masked_pos``.

    The soft-to-hard GPA mask of [`scheduled_mask_patch_groups`] on the mask grid, repeated to the student's patch grid.
    """
    groups = scheduled_mask_patch_groups(
        scores,
        image_size=image_size,
        mask_patch_size=mask_patch_size,
        model_patch_size=model_patch_size,
        mask_ratio=mask_ratio,
        progress=progress,
        schedule=schedule,
        generator=generator,
    )
    return expand_to_model_grid(groups != KEPT, mask_patch_size // model_patch_size)


def random_bool_masked_pos(
    batch_size: int,
    *,
    image_size: int,
    mask_patch_size: int,
    model_patch_size: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, (image_size / model_patch_size)**2) bool: ``run_mim.py``'s random ``bool_masked_pos``, batched."""
    mask_patches = random_mask_patches(
        batch_size,
        image_size=image_size,
        mask_patch_size=mask_patch_size,
        model_patch_size=model_patch_size,
        mask_ratio=mask_ratio,
        generator=generator,
        device=device,
    )
    return expand_to_model_grid(mask_patches, mask_patch_size // model_patch_size)


__all__ = [
    "area_pool_matrix",
    "check_mask_geometry",
    "expand_to_model_grid",
    "scheduled_bool_masked_pos",
    "scheduled_mask_patch_groups",
    "pool_scores",
    "random_bool_masked_pos",
    "random_mask_patches",
    "simmim_mask_count",
]
