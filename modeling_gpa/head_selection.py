"""Few-shot attention selection (paper section 3.4, Table 5, Figure 4): which teacher block and head score patches.

Every candidate, each (block, head) and each block with all heads summed, is scored by its **object recall**: the
share of its top-k GPA patches that lie on the ground-truth object, with k the number of patches MAE masks
(``n - int(n * (1 - mask_ratio))``), averaged over the annotated images. This is the paper's "recall" (the share of
the top-18 GPA patches that lie on the garment): precision-like, ``|topk ∩ object| / k``. A uniformly random mask
scores the object's area share on average (``object_coverage``), the chance level to compare with. The score is
capped: when k exceeds an object's patch count, a candidate that ranks every object patch among its top k scores
``|object| / k`` on that image, and no candidate can do better (``recall_ceiling``, the mean of
``min(|object|, k) / k``). With small objects and MAE's 75% masking, several candidates can reach that cap, so ties
are broken by a finer measure that needs no k: the **average precision** of the object patches in the candidate's GPA
ranking (mean over object patches of the share of object patches ranked at or above it; 1 when every object patch
outranks every background patch, about the object's area share for a random ranking). Only when recall and average
precision both tie does row-major order decide. ``modeling_gpa/evaluation/metrics/object_recall`` reports the same
recall as ``object_recall``.

The whole table costs one teacher pass: the blocks run once, and at each block the LayerNorm + Q/K projections are
read before the block runs, instead of one truncated forward per (block, head).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForPreTraining, ViTMAEModel, ViTModel

from .command_line import check_checkpoint
from .masking import num_masked_patches
from .teacher import block_query_key, full_image_tokens, patch_scores, teacher_scores

# MAE's default, for encoders (ViTModel) whose config has no mask_ratio.
DEFAULT_MASK_RATIO = 0.75
# Recalls closer than this are a tie (they are means of a few ratios of small integers).
TIE_TOLERANCE = 1e-6


@dataclass
class HeadSelection:
    """Object recall and average precision of every candidate, and the best one.

    Args:
        recall: (num_layers, num_heads + 1) mean object recall; column ``num_heads`` is all heads summed.
        average_precision: (num_layers, num_heads + 1) mean average precision of the object patches in the
            candidate's GPA ranking (images without object patches left out).
        best_layer: block of the best candidate: highest recall, ties broken by average precision, then row-major.
        best_head: head of the best candidate, ``None`` for all heads summed.
        best_recall: its object recall on the selection images.
        best_average_precision: its average precision on the selection images.
        order_layer, order_head: the first candidate at the best recall in row-major order (the choice without the
            average-precision tie-break), kept to compare the two choices.
        object_coverage: mean share of patches on the object: what a random mask scores.
        num_masked: k, the number of top-GPA patches compared with the object.
        num_images: number of selection images.
        recall_ceiling: the most any candidate can score on the selection images, mean ``min(|object|, k) / k``.
        heldout_recall: the best candidate's object recall on held-out images, when they were given.
        heldout_object_coverage: the held-out images' object coverage.
        num_heldout: number of held-out images.
        heldout_recall_ceiling: the most any candidate can score on the held-out images.
        heldout_average_precision: the best candidate's average precision on the held-out images.
        heldout_order_recall, heldout_order_average_precision: the same for the row-major choice.
    """

    recall: torch.Tensor
    average_precision: torch.Tensor
    best_layer: int
    best_head: int | None
    best_recall: float
    best_average_precision: float
    order_layer: int
    order_head: int | None
    object_coverage: float
    num_masked: int
    num_images: int
    recall_ceiling: float
    heldout_recall: float | None = None
    heldout_object_coverage: float | None = None
    num_heldout: int = 0
    heldout_recall_ceiling: float | None = None
    heldout_average_precision: float | None = None
    heldout_order_recall: float | None = None
    heldout_order_average_precision: float | None = None

    @property
    def num_tied_best(self) -> int:
        """How many candidates score the best recall (to 1e-6): more than one means the tie-break decided."""
        return int((self.recall >= self.best_recall - TIE_TOLERANCE).sum())

    @property
    def tie_break_changed_choice(self) -> bool:
        """Whether average precision chose another candidate than row-major order would have."""
        return (self.best_layer, self.best_head) != (self.order_layer, self.order_head)

    def ranking(self, top: int = 5) -> list[dict]:
        """The ``top`` candidates, best first (recall, then average precision): ``{"layer", "head", "recall", ...}``."""
        num_heads = self.recall.shape[1] - 1
        order = candidate_order(self.recall, self.average_precision)[:top]
        return [
            {
                "layer": int(i) // (num_heads + 1),
                "head": None if int(i) % (num_heads + 1) == num_heads else int(i) % (num_heads + 1),
                "recall": float(self.recall.flatten()[i]),
                "average_precision": float(self.average_precision.flatten()[i]),
            }
            for i in order
        ]

    def to_dict(self) -> dict:
        """JSON-ready: the table as nested lists (rows blocks, columns heads then ``"all"``), the choice, the rest."""
        num_heads = self.recall.shape[1] - 1
        return {
            "metric": "object recall: share of the top-k GPA patches on the object, averaged over images; ties "
            "broken by average precision of the object patches in the GPA ranking",
            "columns": [*range(num_heads), "all"],
            "recall": [[round(float(v), 6) for v in row] for row in self.recall],
            "average_precision": [[round(float(v), 6) for v in row] for row in self.average_precision],
            "best": {
                "layer": self.best_layer,
                "head": self.best_head,
                "recall": self.best_recall,
                "average_precision": self.best_average_precision,
            },
            "order_choice": {"layer": self.order_layer, "head": self.order_head},
            "top": self.ranking(),
            "num_tied_best": self.num_tied_best,
            "object_coverage": self.object_coverage,
            "recall_ceiling": self.recall_ceiling,
            "num_masked": self.num_masked,
            "num_images": self.num_images,
            "heldout": {
                "recall": self.heldout_recall,
                "average_precision": self.heldout_average_precision,
                "order_choice_recall": self.heldout_order_recall,
                "order_choice_average_precision": self.heldout_order_average_precision,
                "object_coverage": self.heldout_object_coverage,
                "recall_ceiling": self.heldout_recall_ceiling,
                "num_images": self.num_heldout,
            },
        }


def teacher_encoder_of(model: torch.nn.Module) -> ViTMAEModel | ViTModel:
    """The encoder that scores patches: a GPA model's teacher, a ViTMAE/ViT model's ``vit``, or the encoder itself."""
    if isinstance(model, (ViTMAEModel, ViTModel)):
        return model
    encoder = getattr(model, "teacher_encoder", None)
    if encoder is None:
        encoder = getattr(model, "vit", None)
    if not isinstance(encoder, (ViTMAEModel, ViTModel)):
        raise TypeError(
            f"cannot score attention heads of a {type(model).__name__}; pass a GPAForPreTraining, a ViTMAE or ViT "
            "model, or a ViTMAEModel / ViTModel encoder."
        )
    return encoder


def load_scoring_model(model_name_or_path: str, trust_remote_code: bool = False) -> torch.nn.Module:
    """A checkpoint to score patches with, in eval mode; weights load from safetensors only.

    GPA and ViTMAE checkpoints load as pretraining models (so their decoder can reconstruct), ViT ones as encoders.
    Its weight files and its need for code of its own are checked first (one-line ``ValueError``).
    """
    check_checkpoint(model_name_or_path, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise OSError(
            f"no checkpoint at {model_name_or_path!r}: pass a directory with config.json and model.safetensors "
            "(or a Hub id with network access)."
        ) from error
    if config.model_type in ("gpa", "vit_mae"):
        model = AutoModelForPreTraining.from_pretrained(
            model_name_or_path, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    elif config.model_type == "vit":
        model = ViTModel.from_pretrained(
            model_name_or_path, add_pooling_layer=False, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    else:
        raise ValueError(
            f"{model_name_or_path!r} holds a {config.model_type!r} model; pass a gpa, vit_mae or vit checkpoint."
        )
    return model.eval()


def topk_object_share(scores: torch.Tensor, object_patches: torch.Tensor, k: int) -> torch.Tensor:
    """(B, n) scores, (B, n) bool object patches -> (B,) share of each image's ``k`` top-scored patches on it."""
    top = scores.topk(k, dim=-1).indices
    return object_patches.gather(1, top).float().mean(dim=-1)


def average_precision(scores: torch.Tensor, object_patches: torch.Tensor) -> torch.Tensor:
    """(B, n) scores, (B, n) bool object patches -> (B,) average precision of the object patches in each ranking.

    Patches are ranked by descending score (equal scores in patch order); AP is the mean, over object patches, of
    the share of object patches among the patches ranked at or above it. NaN for an image without object patches.
    """
    order = scores.argsort(dim=-1, descending=True, stable=True)
    relevant = object_patches.gather(1, order).float()
    ranks = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=torch.float32)
    precision_at_hit = relevant.cumsum(dim=-1) / ranks * relevant
    return precision_at_hit.sum(dim=-1) / relevant.sum(dim=-1)


def candidate_order(recall: torch.Tensor, average_precision: torch.Tensor) -> torch.Tensor:
    """(L, H+1) tables -> flat candidate indices, best first: recall, then average precision, then row-major order.

    Recalls within ``TIE_TOLERANCE`` of each other count as equal.
    """
    recall, precision = recall.flatten().double(), average_precision.flatten().double().nan_to_num(nan=-1.0)
    rounded = torch.round(recall / TIE_TOLERANCE)
    by_precision = torch.argsort(precision, descending=True, stable=True)
    return by_precision[torch.argsort(rounded[by_precision], descending=True, stable=True)]


def recall_ceiling(object_patches: torch.Tensor, k: int) -> float:
    """(B, n) bool object patches -> the best mean ``topk_object_share`` any scoring reaches: mean min(|obj|, k) / k."""
    return float(object_patches.sum(dim=-1).clamp(max=k).float().mean() / k)


def _scoring_defaults(model: torch.nn.Module, mask_ratio: float | None, score: str | None, queries: str | None):
    config = model.config
    mask_ratio = getattr(config, "mask_ratio", DEFAULT_MASK_RATIO) if mask_ratio is None else mask_ratio
    score = getattr(config, "gpa_score", "logits") if score is None else score
    queries = getattr(config, "gpa_queries", "all") if queries is None else queries
    return mask_ratio, score, queries


def _checked_inputs(
    encoder: ViTMAEModel | ViTModel, pixel_values: torch.Tensor, object_patches: torch.Tensor, mask_ratio: float
) -> int:
    """Validates shapes and returns k."""
    if pixel_values.dim() != 4 or object_patches.dim() != 2 or pixel_values.shape[0] != object_patches.shape[0]:
        raise ValueError(
            f"pixel_values must be (B, C, H, W) and object_patches (B, n) for the same B; got "
            f"{tuple(pixel_values.shape)} and {tuple(object_patches.shape)}."
        )
    num_patches = encoder.embeddings.patch_embeddings.num_patches
    if object_patches.shape[1] != num_patches:
        raise ValueError(
            f"object_patches has {object_patches.shape[1]} patches per image but the encoder has {num_patches}; "
            "build them with data.ground_truth.object_patches at the model's image_size and patch_size."
        )
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio!r} is invalid; allowed values: a number in (0, 1).")
    return num_masked_patches(num_patches, mask_ratio)


def _to_encoder(encoder: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    weight = encoder.embeddings.patch_embeddings.projection.weight
    return pixel_values.to(device=weight.device, dtype=weight.dtype)


def object_recall_table(
    encoder: ViTMAEModel | ViTModel, pixel_values: torch.Tensor, object_patches: torch.Tensor, **options
) -> torch.Tensor:
    """(B, C, H, W) images and (B, n) bool object patches -> (num_layers, num_heads + 1) mean object recall.

    ``options`` are :func:`object_ranking_tables`' keyword arguments (``num_masked`` required).
    """
    return object_ranking_tables(encoder, pixel_values, object_patches, **options)[0]


@torch.no_grad()
def object_ranking_tables(
    encoder: ViTMAEModel | ViTModel,
    pixel_values: torch.Tensor,
    object_patches: torch.Tensor,
    *,
    num_masked: int,
    score: str = "logits",
    queries: str = "all",
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) images, (B, n) bool object patches -> (num_layers, num_heads + 1) mean recall and mean AP.

    One pass through the blocks per batch (``every_head_scores``); the last column is the sum of heads.
    The average precision is averaged over the images that have object patches.
    """
    num_layers, num_heads = len(encoder.layers), encoder.config.num_attention_heads
    totals = torch.zeros(num_layers, num_heads + 1, dtype=torch.float64)
    precision_totals = torch.zeros_like(totals)
    with_objects = int(object_patches.any(dim=-1).sum())
    was_training = encoder.training
    encoder.eval()
    try:
        for start in range(0, pixel_values.shape[0], batch_size):
            batch = _to_encoder(encoder, pixel_values[start : start + batch_size])
            objects = object_patches[start : start + batch_size].to(batch.device, torch.bool)
            for index, column, scores in every_head_scores(encoder, batch, score=score, queries=queries):
                totals[index, column] += topk_object_share(scores, objects, num_masked).sum().item()
                precision_totals[index, column] += average_precision(scores, objects).nansum().item()
    finally:
        encoder.train(was_training)
    return (totals / pixel_values.shape[0]).float(), (precision_totals / max(with_objects, 1)).float()


def every_head_scores(
    encoder: ViTMAEModel | ViTModel, pixel_values: torch.Tensor, *, score: str = "logits", queries: str = "all"
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(B, C, H, W) -> ``(block, column, scores)`` for every head of every block, scores (B, n) raw.

    Columns ``0..H-1`` are the heads and column ``H`` their sum (the CLS row's mean with ``queries="cls"``). One
    pass through the blocks: at block ``b`` its LayerNorm and Q/K projections give every head's score, then the
    block runs.
    """
    num_layers, num_heads = len(encoder.layers), encoder.config.num_attention_heads
    hidden_states = full_image_tokens(encoder, pixel_values)
    for index, block in enumerate(encoder.layers):
        query, key = block_query_key(block, hidden_states)
        for column, head in enumerate([*range(num_heads), None]):
            yield index, column, patch_scores(query, key, head=head, score=score, queries=queries)
        if index + 1 < num_layers:
            hidden_states = block(hidden_states)


def select_attention_head(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    object_patches: torch.Tensor,
    mask_ratio: float | None = None,
    *,
    score: str | None = None,
    queries: str | None = None,
    batch_size: int = 64,
) -> HeadSelection:
    """Scores every (block, head) and every block's all-heads sum of the teacher; picks the best.

    Args:
        model: a ``GPAForPreTraining`` (its ``teacher_encoder`` is scored), a ViTMAE / ViT model, or a bare
            ``ViTMAEModel`` / ``ViTModel`` encoder.
        pixel_values: (B, C, H, W) normalised images at the model's size.
        object_patches: (B, n) bool, True for ground-truth object patches (see ``ground_truth.object_patches``).
        mask_ratio: sets k; defaults to the model's ``config.mask_ratio`` (0.75 for a ViT).
        score, queries: GPA variant; default to the model's ``gpa_score`` / ``gpa_queries`` ("logits", "all").

    Returns:
        A ``HeadSelection``; recall ties go to the higher average precision, then to the first candidate in
        row-major order (earlier block, lower head).
    """
    encoder = teacher_encoder_of(model)
    mask_ratio, score, queries = _scoring_defaults(model, mask_ratio, score, queries)
    num_masked = _checked_inputs(encoder, pixel_values, object_patches, mask_ratio)
    recall, precision = object_ranking_tables(
        encoder,
        pixel_values,
        object_patches,
        num_masked=num_masked,
        score=score,
        queries=queries,
        batch_size=batch_size,
    )
    num_heads = recall.shape[1] - 1
    layer, column = divmod(int(candidate_order(recall, precision)[0]), num_heads + 1)
    order_layer, order_column = divmod(int(torch.argmax(recall.flatten())), num_heads + 1)
    return HeadSelection(
        recall=recall,
        average_precision=precision,
        best_layer=layer,
        best_head=None if column == num_heads else column,
        best_recall=float(recall[layer, column]),
        best_average_precision=float(precision[layer, column]),
        order_layer=order_layer,
        order_head=None if order_column == num_heads else order_column,
        object_coverage=float(object_patches.float().mean()),
        num_masked=num_masked,
        num_images=pixel_values.shape[0],
        recall_ceiling=recall_ceiling(object_patches, num_masked),
    )


def attention_head_recall(
    model: torch.nn.Module, pixel_values: torch.Tensor, object_patches: torch.Tensor, **options
) -> float:
    """Mean object recall of one (block, head) (``head=None``: all heads), e.g. the chosen one on held-out images.

    ``options`` are :func:`attention_head_ranking`'s keyword arguments (``layer`` and ``head`` required).
    """
    return attention_head_ranking(model, pixel_values, object_patches, **options)[0]


@torch.no_grad()
def attention_head_ranking(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    object_patches: torch.Tensor,
    *,
    layer: int,
    head: int | None,
    mask_ratio: float | None = None,
    score: str | None = None,
    queries: str | None = None,
    batch_size: int = 64,
) -> tuple[float, float]:
    """(mean object recall, mean average precision) of one (block, head) (``head=None``: all heads)."""
    encoder = teacher_encoder_of(model)
    mask_ratio, score, queries = _scoring_defaults(model, mask_ratio, score, queries)
    num_masked = _checked_inputs(encoder, pixel_values, object_patches, mask_ratio)
    was_training = encoder.training
    encoder.eval()
    recall_total = precision_total = 0.0
    try:
        for start in range(0, pixel_values.shape[0], batch_size):
            batch = _to_encoder(encoder, pixel_values[start : start + batch_size])
            scores = teacher_scores(encoder, batch, layer=layer, head=head, score=score, queries=queries)
            objects = object_patches[start : start + batch_size].to(scores.device, torch.bool)
            recall_total += topk_object_share(scores, objects, num_masked).sum().item()
            precision_total += average_precision(scores, objects).nansum().item()
    finally:
        encoder.train(was_training)
    with_objects = max(int(object_patches.any(dim=-1).sum()), 1)
    return recall_total / pixel_values.shape[0], precision_total / with_objects


def select_head_for_pretraining(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    object_patches: torch.Tensor,
    *,
    output_dir: str,
    heldout_pixel_values: torch.Tensor | None = None,
    heldout_object_patches: torch.Tensor | None = None,
    mask_ratio: float | None = None,
    apply: bool = True,
    batch_size: int = 64,
) -> HeadSelection:
    """Few-shot selection before pretraining: picks the teacher's block and head, writes ``head_selection.json``.

    Args:
        model: the ``GPAForPreTraining`` about to be trained (or any model ``select_attention_head`` takes).
        pixel_values: (B, C, H, W) normalised selection images at the model's size
            (``data.ground_truth.annotated_model_inputs``).
        object_patches: (B, n) bool ground-truth object patches of the selection images.
        output_dir: where ``head_selection.json`` is written (created if missing).
        heldout_pixel_values, heldout_object_patches: (M, C, H, W) and (M, n) further images, disjoint from the
            selection ones, on which the choice is re-measured (a choice made on 10 images can overfit); ``None``:
            none.
        mask_ratio: sets k; default: the model's ``config.mask_ratio``.
        apply: write the choice into ``model.config.gpa_layer`` / ``gpa_head`` (GPA models only).

    Returns:
        The ``HeadSelection``, held-out numbers filled in when held-out images are given.
    """
    if pixel_values.shape[0] < 1:
        raise ValueError("no selection images; pass at least one annotated image.")
    selection = select_attention_head(model, pixel_values, object_patches, mask_ratio, batch_size=batch_size)
    if heldout_pixel_values is not None and heldout_pixel_values.shape[0]:
        for prefix, layer, head in (
            ("heldout", selection.best_layer, selection.best_head),
            ("heldout_order", selection.order_layer, selection.order_head),
        ):
            recall, precision = attention_head_ranking(
                model,
                heldout_pixel_values,
                heldout_object_patches,
                layer=layer,
                head=head,
                mask_ratio=mask_ratio,
                batch_size=batch_size,
            )
            setattr(selection, f"{prefix}_recall", recall)
            setattr(selection, f"{prefix}_average_precision", precision)
        selection.heldout_object_coverage = float(heldout_object_patches.float().mean())
        selection.heldout_recall_ceiling = recall_ceiling(heldout_object_patches, selection.num_masked)
        selection.num_heldout = heldout_pixel_values.shape[0]
    if apply and hasattr(model.config, "gpa_layer"):
        model.config.gpa_layer = selection.best_layer
        model.config.gpa_head = selection.best_head
    write_selection(selection, output_dir)
    return selection


def write_selection(selection: HeadSelection, output_dir: str, file_name: str = "head_selection.json") -> str:
    """Writes ``selection.to_dict()`` as JSON in ``output_dir``; returns the file's path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, file_name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(selection.to_dict(), handle, indent=2)
    return path


def format_selection(selection: HeadSelection) -> str:
    """A few human-readable lines: the choice, chance level, the cap and, when measured, the held-out numbers."""
    lines = [
        f"best: {candidate_name(selection.best_layer, selection.best_head)}: object recall "
        f"{selection.best_recall:.3f}, average precision {selection.best_average_precision:.3f} "
        f"on {selection.num_images} images (top-{selection.num_masked} GPA patches; "
        f"random mask: {selection.object_coverage:.3f}; most possible: {selection.recall_ceiling:.3f})",
    ]
    if selection.num_tied_best > 1:
        order = candidate_name(selection.order_layer, selection.order_head)
        outcome = (
            f"it replaces {order}, the first in block, head order"
            if selection.tie_break_changed_choice
            else ("it is also the first in block, head order")
        )
        lines.append(f"{selection.num_tied_best} candidates tie at the best recall; average precision chose: {outcome}")
    if selection.heldout_recall is not None:
        lines.append(
            f"held-out: object recall {selection.heldout_recall:.3f}, average precision "
            f"{selection.heldout_average_precision:.3f} on {selection.num_heldout} images "
            f"(random mask: {selection.heldout_object_coverage:.3f}; "
            f"most possible: {selection.heldout_recall_ceiling:.3f})"
        )
        if selection.tie_break_changed_choice:
            lines.append(
                f"held-out, {candidate_name(selection.order_layer, selection.order_head)} (row-major choice): "
                f"object recall {selection.heldout_order_recall:.3f}, "
                f"average precision {selection.heldout_order_average_precision:.3f}"
            )
    return "\n".join(lines)


def candidate_name(layer: int, head: int | None) -> str:
    """'block 2, head 1' or 'block 2, all heads'."""
    return f"block {layer}, " + ("all heads" if head is None else f"head {head}")


__all__ = [
    "HeadSelection",
    "attention_head_ranking",
    "attention_head_recall",
    "average_precision",
    "candidate_name",
    "candidate_order",
    "every_head_scores",
    "format_selection",
    "load_scoring_model",
    "num_masked_patches",
    "object_ranking_tables",
    "object_recall_table",
    "recall_ceiling",
    "select_attention_head",
    "select_head_for_pretraining",
    "teacher_encoder_of",
    "topk_object_share",
    "write_selection",
]
