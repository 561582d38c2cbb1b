"""Soft-to-hard masking (the paper's Eq. 6), expressed as the ``noise`` that ``ViTMAEForPreTraining`` takes.

Of the ``len_mask`` masked patches, a fraction ``hard(p)`` is the top-GPA patches, ``soft(p)`` is sampled in
proportion to the normalised GPA from the rest, and the remainder is uniform; ``p`` is training progress.
"""

from __future__ import annotations

import torch

from .gpa import minmax_normalize

KEPT, HARD, SOFT, RANDOM = 0, 1, 2, 3


def num_masked_patches(num_patches: int, mask_ratio: float) -> int:
    """MAE's count of masked patches, ``n - int(n * (1 - mask_ratio))`` (``ViTMAEEmbeddings.random_masking``)."""
    return num_patches - int(num_patches * (1 - mask_ratio))


def mask_fractions(
    progress: float, hard: tuple[float, float] = (0.0, 0.5), soft: tuple[float, float] = (0.5, 0.0)
) -> tuple[float, float, float]:
    """Eq. 6: (hard, soft, random) fractions of the masked patches at progress ``p`` in [0, 1] (clamped)."""
    p = min(max(float(progress), 0.0), 1.0)
    hard_fraction = hard[0] + p * (hard[1] - hard[0])
    soft_fraction = min(soft[0] + p * (soft[1] - soft[0]), 1.0 - hard_fraction)
    return hard_fraction, soft_fraction, max(0.0, 1.0 - hard_fraction - soft_fraction)


def mask_counts(
    num_patches: int,
    mask_ratio: float,
    progress: float,
    hard: tuple[float, float] = (0.0, 0.5),
    soft: tuple[float, float] = (0.5, 0.0),
) -> tuple[int, int, int]:
    """Exact (hard, soft, random) patch counts; they add up to ``n - int(n * (1 - mask_ratio))``."""
    len_mask = num_masked_patches(num_patches, mask_ratio)
    hard_fraction, soft_fraction, _ = mask_fractions(progress, hard, soft)
    num_hard = min(int(len_mask * hard_fraction), len_mask)
    num_soft = min(int(len_mask * soft_fraction), len_mask - num_hard)
    return num_hard, num_soft, len_mask - num_hard - num_soft


def progress_tensor(progress: float | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Training progress as a 0-d tensor on ``device``, float64 where the device has it.

    A 0-d tensor whose value changes every step is one input to a compiled graph; a Python float would be a
    constant, and each new value a recompilation. Float64 keeps the counts equal to [`mask_counts`]'s.
    """
    device = torch.device(device) if device is not None else None
    if torch.is_tensor(progress) and device is None:
        device = progress.device
    dtype = torch.float32 if device is not None and device.type == "mps" else torch.float64
    return torch.as_tensor(progress, dtype=dtype, device=device)


def mask_count_tensors(
    num_patches: int,
    mask_ratio: float,
    progress: torch.Tensor,
    hard: tuple[float, float] = (0.0, 0.5),
    soft: tuple[float, float] = (0.5, 0.0),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[`mask_counts`] with a 0-d ``progress`` tensor: 0-d int64 (hard, soft, random) counts, no host sync.

    Same arithmetic in the same order as the Python reference, so in float64 the counts are equal.
    """
    return split_mask_count(num_masked_patches(num_patches, mask_ratio), progress, hard, soft)


def split_mask_count(
    len_mask: int,
    progress: torch.Tensor,
    hard: tuple[float, float] = (0.0, 0.5),
    soft: tuple[float, float] = (0.5, 0.0),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 6 split of ``len_mask`` masked patches at a 0-d ``progress``: 0-d int64 (hard, soft, random) counts."""
    p = progress.clamp(0.0, 1.0)
    hard_fraction = hard[0] + p * (hard[1] - hard[0])
    soft_fraction = torch.minimum(soft[0] + p * (soft[1] - soft[0]), 1.0 - hard_fraction)
    num_hard = (len_mask * hard_fraction).floor().long().clamp_max(len_mask)
    num_soft = torch.minimum((len_mask * soft_fraction).floor().long(), len_mask - num_hard)
    return num_hard, num_soft, len_mask - num_hard - num_soft


def _descending_rank(keys: torch.Tensor) -> torch.Tensor:
    """(B, n) -> (B, n) int64 rank of each key in its row, 0 for the largest (stable on ties)."""
    order = keys.argsort(dim=-1, descending=True, stable=True)
    positions = torch.arange(keys.shape[-1], device=keys.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def _take_top(keys: torch.Tensor, taken: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Marks the ``count`` (0-d tensor) largest ``keys`` among the patches not yet ``taken``: (B, n) bool -> bool.

    A rank compared with a tensor count keeps the shapes static whatever the count, so one compiled graph serves
    every step of the schedule (``topk(count)`` would need a new graph per count). ``keys`` must be finite.
    """
    return _descending_rank(keys.masked_fill(taken, float("-inf"))) < count


def gpa_mask_groups(
    gpa: torch.Tensor,
    mask_ratio: float,
    progress: float | torch.Tensor,
    *,
    hard: tuple[float, float] = (0.0, 0.5),
    soft: tuple[float, float] = (0.5, 0.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which patches are masked and why.

    Args:
        gpa: (B, n) raw scores (any scale; normalised per image here).
        progress: training progress in [0, 1], a float or a 0-d tensor (see [`progress_tensor`]).

    Returns:
        (B, n) int64 with ``KEPT`` (0), ``HARD`` (1), ``SOFT`` (2) or ``RANDOM`` (3) per patch: disjoint sets of
        exactly the sizes ``mask_counts`` gives, for every image.
    """
    return mask_groups_of_count(
        gpa, num_masked_patches(gpa.shape[1], mask_ratio), progress, hard=hard, soft=soft, generator=generator
    )


def mask_groups_of_count(
    gpa: torch.Tensor,
    len_mask: int,
    progress: float | torch.Tensor,
    *,
    hard: tuple[float, float] = (0.0, 0.5),
    soft: tuple[float, float] = (0.5, 0.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[`gpa_mask_groups`] for a given number of masked patches ``len_mask`` (SimMIM counts them its own way).

    Returns:
        (B, n) int64 groups; exactly ``len_mask`` patches of each image are not ``KEPT``.
    """
    batch, num_patches = gpa.shape
    num_hard, num_soft, num_random = split_mask_count(len_mask, progress_tensor(progress, gpa.device), hard, soft)
    weights = minmax_normalize(gpa)
    uniform = torch.rand(2, batch, num_patches, generator=generator, device=gpa.device)
    taken = torch.zeros(batch, num_patches, dtype=torch.bool, device=gpa.device)
    # A blank image has all weights equal: break the tie at random rather than by patch index.
    flat = (weights == weights[:, :1]).all(dim=-1, keepdim=True)
    hard_set = _take_top(weights + flat * uniform[0], taken, num_hard)
    # Efraimidis-Spirakis: the k largest u^(1/w) are a weighted sample without replacement.
    soft_keys = uniform[0].clamp_min(1e-12).log() / weights.clamp_min(1e-12)
    soft_set = _take_top(soft_keys, hard_set, num_soft)
    random_set = _take_top(uniform[1], hard_set | soft_set, num_random)
    return hard_set * HARD + soft_set * SOFT + random_set * RANDOM


def noise_from_mask(masked: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, n) bool -> (B, n) noise in [0, 2): masked patches get the largest values, so ViTMAE drops exactly them."""
    uniform = torch.rand(masked.shape, generator=generator, device=masked.device)
    return uniform + masked.float()


def gpa_noise(
    gpa: torch.Tensor,
    mask_ratio: float,
    progress: float | torch.Tensor,
    *,
    hard: tuple[float, float] = (0.0, 0.5),
    soft: tuple[float, float] = (0.5, 0.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, n) raw GPA -> (B, n) noise for ``ViTMAEForPreTraining``: the soft-to-hard mask at ``progress``."""
    groups = gpa_mask_groups(gpa, mask_ratio, progress, hard=hard, soft=soft, generator=generator)
    return noise_from_mask(groups != KEPT, generator=generator)


__all__ = [
    "mask_fractions",
    "mask_counts",
    "mask_count_tensors",
    "progress_tensor",
    "gpa_mask_groups",
    "mask_groups_of_count",
    "split_mask_count",
    "gpa_noise",
    "noise_from_mask",
    "num_masked_patches",
]
