"""Block-wise masking (BEiT), batched: unions of rectangles of patches, exactly ``len_mask`` patches per image.

Adapted from BEiT's ``MaskingGenerator`` (microsoft/unilm, ``beit/masking_generator.py``): each rectangle has an area
drawn uniformly in ``[min_patches, remaining]`` and an aspect ratio log-uniform in ``[min_aspect, 1 / min_aspect]``;
it is added when it masks at least one new patch and no more than the count still missing. BEiT loops per image
and may stop short of the count; here every image of the batch draws its 10 attempts at a rectangle per round,
for a fixed number of rounds, and any patches still missing are added as 1x1 rectangles at random unmasked places,
so the count is exact and no step depends on the data (no host sync).
"""

from __future__ import annotations

import math

import torch

from .masking import noise_from_mask, num_masked_patches, take_top

MIN_PATCHES = 16
MIN_ASPECT = 0.3
# BEiT's attempts at each rectangle.
ATTEMPTS = 10
# Rounds per rectangle of the smallest area the count could take: the areas are drawn up to the count still missing,
# so most images need far fewer; the rest is completed with 1x1 rectangles.
ROUNDS_PER_RECTANGLE = 2


def block_mask(
    batch_size: int,
    grid: tuple[int, int],
    len_mask: int,
    *,
    min_patches: int = MIN_PATCHES,
    min_aspect: float = MIN_ASPECT,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BEiT's block mask for a batch.

    Args:
        grid: (rows, columns) of the patch grid.
        len_mask: masked patches per image, at most ``rows * columns``.

    Returns:
        ``masked`` (B, rows * columns) bool, row-major, exactly ``len_mask`` True per image; and ``rectangles``
        (R, B, 4) int64 ``(top, left, height, width)`` of every rectangle added (height 0 where a round added
        none); and ``singles`` (B, rows * columns) bool, the 1x1 rectangles that completed the count. The union of
        ``rectangles`` and ``singles`` is ``masked``.
    """
    rows, columns = grid
    if not 0 <= len_mask <= rows * columns:
        raise ValueError(f"len_mask={len_mask} is invalid for a {rows}x{columns} grid; pass 0..{rows * columns}.")
    masked = torch.zeros(batch_size, rows, columns, dtype=torch.bool, device=device)
    row_index = torch.arange(rows, device=device).view(1, 1, rows, 1)
    column_index = torch.arange(columns, device=device).view(1, 1, 1, columns)
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    attempts = torch.arange(ATTEMPTS, device=device)
    rectangles = []
    for _ in range(ROUNDS_PER_RECTANGLE * math.ceil(len_mask / min_patches)):
        # BEiT's 10 attempts at one rectangle, drawn at once: the first that fits is added.
        remaining = (len_mask - masked.flatten(1).sum(dim=1)).view(-1, 1)
        uniform = torch.rand(4, batch_size, ATTEMPTS, generator=generator, device=device)
        area = min_patches + uniform[0] * (remaining - min_patches)
        aspect = torch.exp(log_aspect[0] + uniform[1] * (log_aspect[1] - log_aspect[0]))
        height = (area * aspect).sqrt().round().long()
        width = (area / aspect).sqrt().round().long()
        top = (uniform[2] * (rows - height + 1).clamp_min(1)).floor().long()
        left = (uniform[3] * (columns - width + 1).clamp_min(1)).floor().long()
        candidates = (
            (row_index >= top[..., None, None])
            & (row_index < (top + height)[..., None, None])
            & (column_index >= left[..., None, None])
            & (column_index < (left + width)[..., None, None])
        )
        new = (candidates & ~masked.unsqueeze(1)).flatten(2).sum(dim=2)
        # BEiT's conditions, plus the aspect ratio after rounding, so every rectangle kept is within the range.
        ratio = height / width.clamp_min(1)
        fits = (height >= 1) & (width >= 1) & (height < rows) & (width < columns)
        fits &= (ratio >= min_aspect) & (ratio <= 1 / min_aspect) & (new > 0) & (new <= remaining)
        first = torch.where(fits, attempts, ATTEMPTS).amin(dim=1)
        chosen = (attempts == first.unsqueeze(1)) & fits
        masked |= (candidates & chosen[..., None, None]).any(dim=1)
        rectangle = torch.stack([top, left, height * chosen, width * chosen], dim=-1)
        rectangles.append((rectangle * chosen.unsqueeze(-1)).sum(dim=1))
    flat = masked.flatten(1)
    remaining = (len_mask - flat.sum(dim=1)).unsqueeze(1)
    singles = take_top(torch.rand(flat.shape, generator=generator, device=device), flat, remaining)
    rectangles = torch.stack(rectangles) if rectangles else torch.zeros(0, batch_size, 4, dtype=torch.long)
    return flat | singles, rectangles, singles


def block_noise(
    batch_size: int,
    grid: tuple[int, int],
    mask_ratio: float,
    *,
    min_patches: int = MIN_PATCHES,
    min_aspect: float = MIN_ASPECT,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, rows * columns) noise for ``ViTMAEForPreTraining``: BEiT's block mask of MAE's masked count."""
    len_mask = num_masked_patches(grid[0] * grid[1], mask_ratio)
    masked, _, _ = block_mask(
        batch_size, grid, len_mask, min_patches=min_patches, min_aspect=min_aspect, generator=generator, device=device
    )
    return noise_from_mask(masked, generator=generator)


__all__ = ["block_mask", "block_noise"]
