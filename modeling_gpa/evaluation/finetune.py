"""End-to-end fine-tuning helpers: a ViT checkpoint as timm's ``VisionTransformer`` (drop path, average pooling into
``fc_norm``) inside Transformers' ``TimmWrapperForImageClassification``, timm's layer-wise lr decay for it, and
SimMIM's layer ids and lr decay for Transformers' Swin."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..tools.convert import (
    resample_position_embeddings,
    set_layer_norm_eps,
    timm_architecture,
    timm_state_dict,
    timm_vit_kwargs,
)
from .features import is_swin, load_vit

TIMM_POOLINGS = {"avg": "avg", "cls": "token"}


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
    num_layers: int | None = None,
    layer_id_of: Callable[[str], int] | None = None,
) -> list[dict]:
    """Optimizer groups with ``lr * layer_decay ** (num_layers + 1 - layer_id)`` per block (MAE/BEiT fine-tuning;
    for a Swin, SimMIM's: ``num_layers`` counts the blocks of every stage, see [`swin_layer_id`]).

    Biases, norm weights (1-D) and the names in ``no_weight_decay`` get no weight decay. Each group carries its
    ``lr`` (schedulers such as HF Trainer's scale each group's initial lr) and its ``lr_scale``. ``num_layers`` and
    ``layer_id_of`` (parameter name -> layer id) replace those read from ``model.config`` (a ViT classifier's or a
    Swin's), for models that hold the encoder inside, such as UperNet.
    """
    if layer_id_of is None and is_swin(model.config):
        num_layers = sum(model.config.depths)
        layer_id_of = functools.partial(swin_layer_id, depths=list(model.config.depths))
    elif layer_id_of is None:
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


def timm_param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """timm's ``param_groups_layer_decay`` of a timm ViT (alone or inside a ``TimmWrapperForImageClassification``),
    each group with its ``lr`` (``lr * lr_scale``) for Trainer's schedulers.

    timm's layer ids are MAE's ``util/lr_decay.py``'s: 0 for ``cls_token``, ``pos_embed`` and ``patch_embed``,
    ``i + 1`` for ``blocks.i``, ``depth + 1`` for ``norm`` / ``fc_norm`` and ``head``; no weight decay on 1-D
    parameters and ``model.no_weight_decay()`` (``cls_token``, ``pos_embed``).
    """
    from timm.optim import param_groups_layer_decay as timm_layer_decay

    timm_model = getattr(model, "timm_model", model)
    groups = timm_layer_decay(
        timm_model,
        weight_decay=weight_decay,
        no_weight_decay_list=timm_model.no_weight_decay(),
        layer_decay=layer_decay,
    )
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return groups


def timm_classifier(
    name_or_path: str,
    id2label: dict[int, str],
    *,
    image_size: int | None = None,
    pooling: str = "avg",
    drop_path: float = 0.1,
    head_init_std: float = 2e-5,
):
    """A GPA / ViTMAE / ViT checkpoint's encoder in a ``TimmWrapperForImageClassification`` (MAE's ``models_vit``).

    ``pooling="avg"``: the mean of the patch tokens into a new ``fc_norm`` (the pretrained final norm is dropped, as
    MAE's ``global_pool``); ``"cls"``: the CLS token after the pretrained norm. Drop path rises linearly to
    ``drop_path`` over the blocks. Position embeddings are resized bicubically when ``image_size`` differs from the
    checkpoint's; only the head (and ``fc_norm``) start new, the head from trunc_normal(std=``head_init_std``).
    The checkpoint's LayerNorm eps is set on the built model (timm's own default, 1e-6, comes back on reloading it).
    """
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, ViTModel

    if pooling not in TIMM_POOLINGS:
        raise ValueError(f"--pooling {pooling!r} is invalid; allowed values: {', '.join(TIMM_POOLINGS)}.")
    encoder = load_vit(ViTModel, name_or_path, add_pooling_layer=False)
    config = encoder.config
    image_size = image_size or config.image_size
    if image_size % config.patch_size:
        raise ValueError(f"--image_size {image_size} is not a multiple of the patch size {config.patch_size}.")
    model_args = {
        **timm_vit_kwargs(config, image_size),
        "global_pool": TIMM_POOLINGS[pooling],
        "drop_path_rate": drop_path,
    }
    wrapper_config = TimmWrapperConfig(
        architecture=timm_architecture(config, image_size),
        model_args=model_args,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
    )
    model = TimmWrapperForImageClassification(wrapper_config)
    set_layer_norm_eps(model, config.layer_norm_eps)
    weights = timm_state_dict(encoder.state_dict())
    weights["pos_embed"] = resample_position_embeddings(weights["pos_embed"], image_size // config.patch_size)
    if pooling == "avg":
        weights = {key: value for key, value in weights.items() if not key.startswith("norm.")}
    missing, unexpected = model.timm_model.load_state_dict(weights, strict=False)
    new = {"head.weight", "head.bias"} | ({"fc_norm.weight", "fc_norm.bias"} if pooling == "avg" else set())
    if set(missing) != new or unexpected:
        raise ValueError(
            f"{name_or_path!r} does not fit timm's ViT: missing {sorted(set(missing) - new)}, unexpected "
            f"{sorted(unexpected)}; pass a GPA, ViTMAE or ViT checkpoint."
        )
    head = model.timm_model.head
    with torch.no_grad():
        nn.init.trunc_normal_(head.weight, std=head_init_std)
        nn.init.zeros_(head.bias)
    return model
