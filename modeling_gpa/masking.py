"""The mask schedule (the paper's Eq. 6) and its exact counts, as the ``noise`` that ``ViTMAEForPreTraining`` takes.

Of the ``len_mask`` masked patches, a share ``hard(p)`` is the highest-scored patches, ``soft(p)`` is sampled in
proportion to the normalised score from the rest, and the remainder is uniform; ``p`` is training progress. The
functions here are score-agnostic: GPA's column sum, the CLS row (``cls_attention``) or HPM's predicted losses all
come in as one (B, n) ``score``. Every strategy's generator is listed in ``mask_strategies``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .gpa import minmax_normalize

KEPT, HARD, SOFT, RANDOM = 0, 1, 2, 3


@dataclass(frozen=True)
class MaskSchedule:
    """Eq. 6's hard and soft shares of the masked patches at progress 0 (``*_start``) and 1 (``*_end``).

    The defaults are the paper's: soft 0.5 -> 0, hard 0 -> 0.5.
    """

    hard_start: float = 0.0
    hard_end: float = 0.5
    soft_start: float = 0.5
    soft_end: float = 0.0

    @classmethod
    def from_config(cls, config) -> MaskSchedule:
        """The schedule of a ``GPAConfig`` (its ``hard_ratio_*`` and ``soft_ratio_*`` fields)."""
        return cls(config.hard_ratio_start, config.hard_ratio_end, config.soft_ratio_start, config.soft_ratio_end)


PAPER_SCHEDULE = MaskSchedule()
NO_SCHEDULE = MaskSchedule(0.0, 0.0, 0.0, 0.0)


def num_masked_patches(num_patches: int, mask_ratio: float) -> int:
    """MAE's count of masked patches, ``n - int(n * (1 - mask_ratio))`` (``ViTMAEEmbeddings.random_masking``)."""
    return num_patches - int(num_patches * (1 - mask_ratio))


def progress_tensor(progress: float | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Training progress as a 0-d tensor on ``device``, float64 where the device has it.

    A 0-d tensor whose value changes every step is one input to a compiled graph; a Python float would be a
    constant, and each new value a recompilation. Float64 keeps the counts those of exact decimal arithmetic.
    """
    device = torch.device(device) if device is not None else None
    if torch.is_tensor(progress) and device is None:
        device = progress.device
    dtype = torch.float32 if device is not None and device.type == "mps" else torch.float64
    return torch.as_tensor(progress, dtype=dtype, device=device)


def schedule_fractions(schedule: MaskSchedule, progress: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 at a 0-d ``progress`` (clamped to [0, 1]): 0-d (hard, soft) shares, soft clipped to ``1 - hard``."""
    p = progress.clamp(0.0, 1.0)
    hard = schedule.hard_start + p * (schedule.hard_end - schedule.hard_start)
    soft = torch.minimum(schedule.soft_start + p * (schedule.soft_end - schedule.soft_start), 1.0 - hard)
    return hard, soft


def mask_fractions(progress: float | torch.Tensor, schedule: MaskSchedule = PAPER_SCHEDULE) -> tuple[float, ...]:
    """(hard, soft, random) shares of the masked patches at ``progress``, as Python floats (for logs)."""
    hard, soft = (float(value) for value in schedule_fractions(schedule, progress_tensor(progress, "cpu")))
    return hard, soft, max(0.0, 1.0 - hard - soft)


def split_mask_count(
    len_mask: int, progress: torch.Tensor, schedule: MaskSchedule = PAPER_SCHEDULE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 6 split of ``len_mask`` masked patches at a 0-d ``progress``: 0-d int64 (hard, soft, random) counts.

    The only count implementation: on the device, no host sync, ``int(len_mask * share)`` for hard and soft.
    """
    hard, soft = schedule_fractions(schedule, progress)
    num_hard = (len_mask * hard).floor().long().clamp_max(len_mask)
    num_soft = torch.minimum((len_mask * soft).floor().long(), len_mask - num_hard)
    return num_hard, num_soft, len_mask - num_hard - num_soft


def mask_counts(
    num_patches: int, mask_ratio: float, progress: float | torch.Tensor, schedule: MaskSchedule = PAPER_SCHEDULE
) -> tuple[int, int, int]:
    """[`split_mask_count`] of MAE's masked count as Python ints; they add up to ``num_masked_patches``."""
    counts = split_mask_count(num_masked_patches(num_patches, mask_ratio), progress_tensor(progress, "cpu"), schedule)
    return tuple(int(count) for count in counts)


def _descending_rank(keys: torch.Tensor) -> torch.Tensor:
    """(B, n) -> (B, n) int64 rank of each key in its row, 0 for the largest (stable on ties)."""
    order = keys.argsort(dim=-1, descending=True, stable=True)
    positions = torch.arange(keys.shape[-1], device=keys.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def take_top(keys: torch.Tensor, taken: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Marks the ``count`` largest ``keys`` among the patches not yet ``taken``: (B, n) bool -> bool.

    ``count`` is a 0-d tensor, or (B, 1) for a count per image. A rank compared with a tensor count keeps the shapes
    static whatever the count, so one compiled graph serves every step of the schedule (``topk(count)`` would need
    a new graph per count). ``keys`` must be finite.
    """
    return _descending_rank(keys.masked_fill(taken, float("-inf"))) < count


def mask_groups(
    score: torch.Tensor,
    len_mask: int,
    progress: float | torch.Tensor,
    schedule: MaskSchedule = PAPER_SCHEDULE,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which patches are masked and why.

    Args:
        score: (B, n) raw scores (any scale; min-max normalised per image here).
        len_mask: masked patches per image (``num_masked_patches``; SimMIM counts them its own way).
        progress: training progress in [0, 1], a float or a 0-d tensor (see [`progress_tensor`]).

    Returns:
        (B, n) int64 with ``KEPT`` (0), ``HARD`` (1), ``SOFT`` (2) or ``RANDOM`` (3) per patch: disjoint sets of
        exactly the sizes [`split_mask_count`] gives, for every image.
    """
    batch, num_patches = score.shape
    num_hard, num_soft, num_random = split_mask_count(len_mask, progress_tensor(progress, score.device), schedule)
    weights = minmax_normalize(score)
    uniform = torch.rand(2, batch, num_patches, generator=generator, device=score.device)
    taken = torch.zeros(batch, num_patches, dtype=torch.bool, device=score.device)
    # A blank image has all weights equal: break the tie at random rather than by patch index.
    flat = (weights == weights[:, :1]).all(dim=-1, keepdim=True)
    hard_set = take_top(weights + flat * uniform[0], taken, num_hard)
    # Efraimidis-Spirakis: the k largest u^(1/w) are a weighted sample without replacement.
    soft_keys = uniform[0].clamp_min(1e-12).log() / weights.clamp_min(1e-12)
    soft_set = take_top(soft_keys, hard_set, num_soft)
    random_set = take_top(uniform[1], hard_set | soft_set, num_random)
    return hard_set * HARD + soft_set * SOFT + random_set * RANDOM


def noise_from_mask(masked: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, n) bool -> (B, n) noise in [0, 2): masked patches get the largest values, so ViTMAE drops exactly them."""
    uniform = torch.rand(masked.shape, generator=generator, device=masked.device)
    return uniform + masked.float()


def scheduled_noise(
    score: torch.Tensor,
    mask_ratio: float,
    progress: float | torch.Tensor,
    schedule: MaskSchedule = PAPER_SCHEDULE,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, n) raw scores -> (B, n) noise for ``ViTMAEForPreTraining``: the Eq. 6 mask at ``progress``."""
    len_mask = num_masked_patches(score.shape[1], mask_ratio)
    groups = mask_groups(score, len_mask, progress, schedule, generator=generator)
    return noise_from_mask(groups != KEPT, generator=generator)


__all__ = [
    "MaskSchedule",
    "NO_SCHEDULE",
    "PAPER_SCHEDULE",
    "mask_counts",
    "mask_fractions",
    "mask_groups",
    "noise_from_mask",
    "num_masked_patches",
    "progress_tensor",
    "schedule_fractions",
    "scheduled_noise",
    "split_mask_count",
    "take_top",
]
