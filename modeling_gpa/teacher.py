"""Teachers that score patches: full-image tokens and the Q/K of one block, running nothing past it.

A teacher encoder is a ``ViTMAEModel`` (the student's own encoder, its EMA copy, or a pretrained MAE) or a
``ViTModel`` (a pretrained ViT). Both keep their blocks in ``.layers`` with ``layernorm_before`` and
``attention.{q_proj,k_proj}``, which is all the score needs.

Under FSDP2 (``fsdp.yaml``) every ``ViTMAELayer`` is its own shard unit, whose parameters are gathered by the hooks
around its ``forward``. The score runs only part of block ``layer``, so it gathers that block itself
([`gathered_block`]); the teacher stays sharded like the student (docs/distributed.md says why).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from transformers import AutoConfig, ViTMAEModel, ViTModel
from transformers.utils import SAFE_WEIGHTS_NAME
from transformers.utils import logging as transformers_logging

from .checkpoint_files import safetensors_problem
from .cls_attention import cls_patch_attention
from .finite_weights import nonfinite_tensors
from .gpa import global_patch_attention

TEACHER_CLASSES = {"vit_mae": ViTMAEModel, "vit": ViTModel, "gpa": ViTMAEModel}


def full_image_tokens(
    encoder: ViTMAEModel | ViTModel, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1+n, D) embedded tokens of the whole image in patch order (no masking, no shuffle)."""
    embeddings = encoder.embeddings
    if isinstance(encoder, ViTModel):
        return embeddings(pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding))
    patches = embeddings.patch_embeddings(pixel_values)
    if interpolate_pos_encoding:
        positions = embeddings.interpolate_pos_encoding(patches, *pixel_values.shape[2:])
    else:
        positions = embeddings.position_embeddings
    cls = (embeddings.cls_token + positions[:, :1]).expand(patches.shape[0], -1, -1)
    return torch.cat([cls, patches + positions[:, 1:]], dim=1)


def query_key_at(
    encoder: ViTMAEModel | ViTModel, pixel_values: torch.Tensor, layer: int, interpolate_pos_encoding: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of block ``layer`` on the full image, each (B, H, 1+n, d).

    Runs blocks ``0..layer-1`` whole and, in block ``layer``, only its LayerNorm and Q/K projections.
    """
    hidden_states = full_image_tokens(encoder, pixel_values, interpolate_pos_encoding)
    for block in encoder.layers[:layer]:
        hidden_states = block(hidden_states)
    block = encoder.layers[layer]
    with gathered_block(block):
        # FSDP's mixed precision casts a unit's inputs in its forward hook, which this partial block bypasses.
        query, key = block_query_key(block, hidden_states.to(block.layernorm_before.weight.dtype))
    return query, key


def block_query_key(block: nn.Module, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1+n, D) input of a ViT / ViTMAE block -> its queries and keys, each (B, H, 1+n, d).

    The one place that reads transformers' block internals (``layernorm_before``, ``attention.{q,k}_proj``,
    ``head_dim``): the teacher's score and the few-shot selection both call it.
    """
    normed = block.layernorm_before(hidden_states)
    attention = block.attention
    shape = (*normed.shape[:2], -1, attention.head_dim)
    return attention.q_proj(normed).view(shape).transpose(1, 2), attention.k_proj(normed).view(shape).transpose(1, 2)


def patch_scores(
    query: torch.Tensor, key: torch.Tensor, *, head: int | None, score: str = "logits", queries: str = "all"
) -> torch.Tensor:
    """(B, H, 1+n, d) queries and keys -> (B, n) patch scores: the CLS row (``queries="cls"``) or GPA's sum."""
    if queries == "cls":
        return cls_patch_attention(query, key, head=head, score=score)
    return global_patch_attention(query, key, head=head, score=score, queries=queries)


@contextmanager
def gathered_block(block: nn.Module) -> Iterator[None]:
    """Inside: the full parameters of ``block`` when it is an FSDP2 unit (all-gathered, resharded on exit).

    FSDP2 gathers a unit's parameters only around its ``forward``; code that calls its submodules directly, as the
    score does with LayerNorm and Q/K, would meet sharded DTensors. Other modules pass through unchanged.
    """
    if not isinstance(block, FSDPModule):
        yield
        return
    block.unshard()
    try:
        yield
    finally:
        block.reshard()


@torch.no_grad()
def teacher_scores(
    encoder: ViTMAEModel | ViTModel,
    pixel_values: torch.Tensor,
    *,
    layer: int,
    head: int | None,
    score: str = "logits",
    queries: str = "all",
    interpolate_pos_encoding: bool = False,
) -> torch.Tensor:
    """(B, C, H, W) -> (B, n) raw float32 scores of ``encoder`` at block ``layer`` and ``head`` (None: all heads).

    ``queries``: ``"all"`` / ``"others"`` for GPA's column sum, ``"cls"`` for the CLS row ([`patch_scores`]).
    """
    query, key = query_key_at(encoder, pixel_values, layer, interpolate_pos_encoding)
    return patch_scores(query, key, head=head, score=score, queries=queries)


def load_pretrained_teacher(name_or_path: str) -> ViTMAEModel | ViTModel:
    """Loads a frozen ViTMAE / ViT / GPA encoder from a local directory or Hub id, in eval mode."""
    try:
        # A teacher's own code (config.json's auto_map) is never run: it loads as one of the classes below.
        teacher_config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as error:
        where = "directory" if os.path.isdir(name_or_path) else "path or Hub id"
        raise OSError(
            f"GPA teacher checkpoint not found at {name_or_path!r} ({where}): set gpa_teacher_name_or_path "
            "(--gpa_teacher_name_or_path) to a local ViTMAE or ViT checkpoint directory, or to a Hub id with network "
            "access."
        ) from error
    teacher_class = TEACHER_CLASSES.get(teacher_config.model_type)
    if teacher_class is None:
        raise ValueError(
            f"GPAConfig.gpa_teacher_name_or_path={name_or_path!r} holds a {teacher_config.model_type!r} model; "
            f"allowed values: a checkpoint of type {', '.join(sorted(TEACHER_CLASSES))}."
        )
    extra = {"add_pooling_layer": False} if teacher_class is ViTModel else {}
    weights = os.path.join(name_or_path, SAFE_WEIGHTS_NAME)
    if os.path.isfile(weights) and (problem := safetensors_problem(weights)):
        raise ValueError(
            f"GPA teacher checkpoint {name_or_path!r} cannot be loaded: {problem}; set gpa_teacher_name_or_path "
            "(--gpa_teacher_name_or_path) to a complete copy of it."
        )
    # An MAE or GPA checkpoint also holds a decoder (and a GPA one may hold its own teacher): loading the encoder
    # alone leaves those unused by design, so Transformers' load report would only alarm. Missing encoder weights
    # are a real problem and raise instead.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        teacher, loading_info = teacher_class.from_pretrained(name_or_path, output_loading_info=True, **extra)
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = sorted(loading_info["missing_keys"])
    if missing:
        raise ValueError(
            f"GPA teacher checkpoint {name_or_path!r} lacks {len(missing)} encoder weights (first: {missing[0]!r}): "
            "set gpa_teacher_name_or_path (--gpa_teacher_name_or_path) to a ViTMAE, ViT or GPA checkpoint that "
            "holds a whole encoder."
        )
    bad = nonfinite_tensors(teacher)
    if bad:
        raise ValueError(
            f"GPA teacher checkpoint {name_or_path!r} has non-finite weights (NaN or inf) in {len(bad)} tensors "
            f"(first: {bad[0]!r}): it diverged in training; set gpa_teacher_name_or_path (--gpa_teacher_name_or_path) "
            "to an earlier checkpoint of it."
        )
    return freeze(teacher)


def build_teacher_from_config(teacher_config_dict: dict) -> ViTMAEModel | ViTModel:
    """The teacher's architecture from a stored config dict (weights come from the checkpoint)."""
    model_type = teacher_config_dict["model_type"]
    teacher_config = AutoConfig.for_model(**teacher_config_dict)
    teacher_class = TEACHER_CLASSES[model_type]
    extra = {"add_pooling_layer": False} if teacher_class is ViTModel else {}
    return freeze(teacher_class(teacher_config, **extra))


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode: the teacher is never trained by the optimizer."""
    module.requires_grad_(False)
    return module.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student``, parameters and floating buffers."""
    teacher_tensors = [*teacher.parameters(), *(b for b in teacher.buffers() if b.is_floating_point())]
    student_tensors = [*student.parameters(), *(b for b in student.buffers() if b.is_floating_point())]
    torch._foreach_lerp_(teacher_tensors, student_tensors, 1.0 - momentum)


__all__ = [
    "full_image_tokens",
    "query_key_at",
    "block_query_key",
    "patch_scores",
    "gathered_block",
    "teacher_scores",
    "load_pretrained_teacher",
    "build_teacher_from_config",
    "ema_update",
    "freeze",
]
