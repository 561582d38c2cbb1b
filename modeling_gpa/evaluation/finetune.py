"""End-to-end fine-tuning helpers: ViT and Swin layer ids and MAE's (SimMIM's for Swin) layer-wise lr decay."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from torch import nn

from .features import is_swin


def vit_layer_id(name: str, num_layers: int) -> int:
    """BEiT/MAE layer id of a ``ViTForImageClassification`` parameter: 0 for the embeddings (CLS, position and patch
    embeddings), ``i + 1`` for block ``i``, ``num_layers + 1`` for the final norm and the classifier."""
    if name.startswith(("vit.embeddings", "embeddings")):
        return 0
    match = re.search(r"(?:^|\.)layers?\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def swin_layer_id(name: str, depths: Sequence[int]) -> int:
    """SimMIM's layer id of a ``SwinForImageClassification`` parameter: 0 for the embeddings, ``sum(depths[:i]) + j
    + 1`` for block ``j`` of stage ``i``, the patch merging after stage ``i`` with that stage's last block, and
    ``sum(depths) + 1`` for the final norm and the classifier."""
    if name.startswith(("swin.embeddings", "embeddings")):
        return 0
    if match := re.search(r"layers\.(\d+)\.blocks\.(\d+)\.", name):
        return sum(depths[: int(match.group(1))]) + int(match.group(2)) + 1
    if match := re.search(r"layers\.(\d+)\.downsample\.", name):
        return sum(depths[: int(match.group(1)) + 1])
    return sum(depths) + 1


def param_groups_layer_decay(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    no_weight_decay: Iterable[str] = ("cls_token", "position_embeddings", "relative_position_bias_table"),
) -> list[dict]:
    """Optimizer groups with ``lr * layer_decay ** (num_layers + 1 - layer_id)`` per block (MAE/BEiT fine-tuning;
    for a Swin, SimMIM's: ``num_layers`` counts the blocks of every stage, see [`swin_layer_id`]).

    Biases, norm weights (1-D) and the names in ``no_weight_decay`` get no weight decay. Each group carries its
    ``lr`` (schedulers such as HF Trainer's scale each group's initial lr) and its ``lr_scale``.
    """
    if is_swin(model.config):
        num_layers = sum(model.config.depths)
        layer_id_of = functools.partial(swin_layer_id, depths=list(model.config.depths))
    else:
        num_layers = model.config.num_hidden_layers
        layer_id_of = functools.partial(vit_layer_id, num_layers=num_layers)

    skip = tuple(no_weight_decay)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1 and not any(token in name for token in skip)
        layer_id = layer_id_of(name)
        scale = layer_decay ** (num_layers + 1 - layer_id)
        group = groups.setdefault(
            (layer_id, decay),
            {"params": [], "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0},
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]
