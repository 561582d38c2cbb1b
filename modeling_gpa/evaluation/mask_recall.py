"""Do a checkpoint's masks find the object? Object recall of its GPA ranking and of the masks its schedule draws.

On annotated images (held out from training and from selection), for the checkpoint's configured teacher block and
head:

- the **top-k recall** and **average precision** of its GPA ranking (k = the number of masked patches), as in
  few-shot selection;
- the **hard set** of the end of the schedule (the top ``int(k * hard_ratio_end)`` patches): its share on the object;
- the **schedule's masks** (hard + soft + random, as training drew them) at a few training progresses: the share of
  masked patches on the object.

Each is set against the chance level (a uniformly random mask's expected share: the object's area share) and the
ceiling (the most a mask of that size can score, mean ``min(|object|, size) / size``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..head_selection import attention_head_ranking, candidate_name, recall_ceiling, teacher_encoder_of
from ..masking import KEPT, MaskSchedule, mask_counts, mask_groups, num_masked_patches


@dataclass
class MaskRecall:
    """Object recall of one checkpoint's masks on annotated images.

    Args:
        layer, head: the teacher block and head (``None``: all heads) the checkpoint masks with.
        num_images: annotated images measured.
        num_masked: k, patches masked per image.
        object_coverage: mean share of patches on the object: the chance level of every recall below.
        topk_recall, average_precision: of the GPA ranking (top k; all object patches).
        recall_ceiling: the most a k-patch mask can score.
        num_hard: size of the end-of-schedule hard set; ``hard_recall`` its share on the object (``None`` when 0),
            ``hard_ceiling`` the most a set of that size can score.
        progress, schedule_recall: training progresses and the share of the masked patches on the object there.
    """

    layer: int
    head: int | None
    num_images: int
    num_masked: int
    object_coverage: float
    topk_recall: float
    average_precision: float
    recall_ceiling: float
    num_hard: int
    hard_recall: float | None
    hard_ceiling: float | None
    progress: list[float]
    schedule_recall: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def masked_object_share(masked: torch.Tensor, object_patches: torch.Tensor) -> torch.Tensor:
    """(B, n) bool masked, (B, n) bool object -> (B,) share of each image's masked patches that lie on the object."""
    return (masked & object_patches).sum(dim=-1).float() / masked.sum(dim=-1).clamp_min(1).float()


@torch.no_grad()
def measure_mask_recall(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    object_patches: torch.Tensor,
    *,
    progress: tuple[float, ...] = (0.0, 0.5, 1.0),
    seed: int = 0,
    batch_size: int = 256,
) -> MaskRecall:
    """Measures a ``GPAForPreTraining``'s masks on (B, C, H, W) images with (B, n) bool object patches."""
    config = model.config
    encoder = teacher_encoder_of(model)
    layer = config.resolved_gpa_layer(len(encoder.layers))
    head = config.resolved_gpa_head(encoder.config.num_attention_heads)
    object_patches = object_patches.bool()
    topk_recall, precision = attention_head_ranking(
        model, pixel_values, object_patches, layer=layer, head=head, batch_size=batch_size
    )
    num_patches = object_patches.shape[1]
    num_masked = num_masked_patches(num_patches, config.mask_ratio)
    schedule = MaskSchedule.from_config(config)
    num_hard = mask_counts(num_patches, config.mask_ratio, 1.0, schedule)[0]
    generator = torch.Generator().manual_seed(seed)
    hard_total, schedule_totals = 0.0, [0.0] * len(progress)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, pixel_values.shape[0], batch_size):
            objects = object_patches[start : start + batch_size]
            gpa = model.compute_gpa(pixel_values[start : start + batch_size]).cpu()
            if num_hard:
                top = torch.zeros_like(objects).scatter_(1, gpa.topk(num_hard, dim=-1).indices, True)
                hard_total += masked_object_share(top, objects).sum().item()
            for index, p in enumerate(progress):
                groups = mask_groups(gpa, num_masked, p, schedule, generator=generator)
                schedule_totals[index] += masked_object_share(groups != KEPT, objects).sum().item()
    finally:
        model.train(was_training)
    count = pixel_values.shape[0]
    return MaskRecall(
        layer=layer,
        head=head,
        num_images=count,
        num_masked=num_masked,
        object_coverage=float(object_patches.float().mean()),
        topk_recall=topk_recall,
        average_precision=precision,
        recall_ceiling=recall_ceiling(object_patches, num_masked),
        num_hard=num_hard,
        hard_recall=hard_total / count if num_hard else None,
        hard_ceiling=recall_ceiling(object_patches, num_hard) if num_hard else None,
        progress=list(progress),
        schedule_recall=[total / count for total in schedule_totals],
    )


def format_mask_recall(report: MaskRecall) -> str:
    """A short table: each measure against chance and the ceiling."""
    chance = report.object_coverage
    rows = [
        (f"top-{report.num_masked} GPA patches", report.topk_recall, report.recall_ceiling),
        *(
            [(f"hard set at the end (top {report.num_hard})", report.hard_recall, report.hard_ceiling)]
            if report.num_hard
            else []
        ),
        *(
            (f"schedule's mask at progress {p:.1f}", value, report.recall_ceiling)
            for p, value in zip(report.progress, report.schedule_recall, strict=True)
        ),
    ]
    lines = [
        f"Object recall of the masks ({candidate_name(report.layer, report.head)}) on {report.num_images} held-out "
        f"images: share of masked patches on the object (chance = a random mask = {chance:.3f})",
        f"  {'mask':<40} {'recall':>7} {'x chance':>9} {'ceiling':>8}",
    ]
    for name, value, ceiling in rows:
        lines.append(f"  {name:<40} {value:>7.3f} {value / chance:>8.2f}x {ceiling:>8.3f}")
    lines.append(
        f"  average precision of the object patches in the GPA ranking: {report.average_precision:.3f} "
        f"(a random ranking: about {chance:.3f})"
    )
    return "\n".join(lines)


__all__ = ["MaskRecall", "format_mask_recall", "masked_object_share", "measure_mask_recall"]
