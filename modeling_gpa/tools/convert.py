"""Encoder weights both ways between Hugging Face ViTs (GPA, ViTMAE, ViT) and timm's ``VisionTransformer``.

MAE's checkpoints, and every MAE-style fine-tuning codebase, use timm's names; Transformers' use its own. The mapping
(one ViT block shown; the blocks are ``layers.{i}`` here and ``blocks.{i}`` in timm)::

    embeddings.cls_token                            cls_token
    embeddings.position_embeddings                  pos_embed
    embeddings.patch_embeddings.projection          patch_embed.proj
    layers.{i}.layernorm_before                     blocks.{i}.norm1
    layers.{i}.attention.{q,k,v}_proj               blocks.{i}.attn.qkv      (joined along the output rows: q, k, v)
    layers.{i}.attention.o_proj                     blocks.{i}.attn.proj
    layers.{i}.layernorm_after                      blocks.{i}.norm2
    layers.{i}.mlp.fc1, fc2                         blocks.{i}.mlp.fc1, fc2
    layernorm                                       norm

``--layout mae`` writes ``torch.save({"model": weights})`` as MAE's released ``mae_pretrain_vit_base.pth`` (the
encoder with its final ``norm``, no decoder, no head): detectron2's ViTDet configs and mmsegmentation's MAE configs
load it as they load MAE's own file (docs/dense_transfer.md has their commands).

The LayerNorm eps is not in a state dict: [`timm_vit_kwargs`] carries the config's (Transformers' ViTs default to
1e-12, timm to 1e-6) into the timm model, and [`vit_config_from_timm`] takes it as an argument the other way.

    python -m modeling_gpa.tools.convert to-timm --model_name_or_path outputs/gpa --output outputs/gpa-timm.safetensors
    python -m modeling_gpa.tools.convert to-timm --layout mae --model_name_or_path outputs/gpa --output outputs/gpa.pth
    python -m modeling_gpa.tools.convert from-timm --checkpoint mae_pretrain_vit_base.pth --num_attention_heads 12 \\
        --output_dir outputs/mae-vit-base
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import re
from collections.abc import Mapping

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Transformers name -> timm name, for everything outside the attention's q/k/v (which become one qkv matrix).
_BLOCK_NAMES = {
    "layernorm_before": "norm1",
    "attention.o_proj": "attn.proj",
    "layernorm_after": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_EMBEDDING_NAMES = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_PATCH_WEIGHT = "embeddings.patch_embeddings.projection.weight"
# The well-known ViT shapes (width, depth, heads) and their timm names.
_TIMM_SIZES = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large"}
_TIMM_SIZES[(1280, 32, 16)] = "huge"
TIMM_LAYOUTS = ("safetensors", "mae")


def encoder_prefix(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Where a Transformers ViT encoder sits in ``state_dict``: ``""`` (ViTModel), ``"vit."`` (GPA, ViTMAE, ViT
    classifiers), ...; a one-line ``ValueError`` when there is no ViT patch embedding."""
    for key in state_dict:
        if key.endswith(_PATCH_WEIGHT):
            return key[: -len(_PATCH_WEIGHT)]
    raise ValueError(
        f"No ViT encoder in these weights (no '*{_PATCH_WEIGHT}' key); pass a GPA, ViTMAE or ViT checkpoint."
    )


def timm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Transformers ViT encoder's weights (GPA, ViTMAE, ViT; any prefix) -> timm ``VisionTransformer`` names.

    Decoders, heads and masks are left out: the result is the encoder only (with ``norm``, its final LayerNorm).
    """
    prefix = encoder_prefix(state_dict)
    encoder = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    converted = {new: encoder[old] for old, new in _EMBEDDING_NAMES.items() if old in encoder}
    blocks = sorted({int(m.group(1)) for key in encoder if (m := re.match(r"layers\.(\d+)\.", key))})
    for index in blocks:
        old, new = f"layers.{index}.", f"blocks.{index}."
        for kind in ("weight", "bias"):
            parts = [encoder.get(f"{old}attention.{name}_proj.{kind}") for name in "qkv"]
            if all(part is not None for part in parts):
                converted[f"{new}attn.qkv.{kind}"] = torch.cat(parts)
            for hf_name, timm_name in _BLOCK_NAMES.items():
                if f"{old}{hf_name}.{kind}" in encoder:
                    converted[f"{new}{timm_name}.{kind}"] = encoder[f"{old}{hf_name}.{kind}"]
    return converted


def hf_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """timm ``VisionTransformer`` weights (MAE's checkpoints: ``checkpoint["model"]``) -> a Transformers ``ViTModel``'s
    names under ``prefix``; what is not the encoder (a decoder, ``mask_token``, a head, ``fc_norm``) is left out."""
    if "patch_embed.proj.weight" not in state_dict:
        raise ValueError("No timm ViT in these weights (no 'patch_embed.proj.weight'); pass a timm or MAE checkpoint.")
    inverse = {new: old for old, new in _EMBEDDING_NAMES.items()}
    converted = {prefix + inverse[key]: value for key, value in state_dict.items() if key in inverse}
    blocks = sorted({int(m.group(1)) for key in state_dict if (m := re.match(r"blocks\.(\d+)\.", key))})
    for index in blocks:
        old, new = f"blocks.{index}.", f"{prefix}layers.{index}."
        for kind in ("weight", "bias"):
            qkv = state_dict.get(f"{old}attn.qkv.{kind}")
            if qkv is not None:
                for name, part in zip("qkv", qkv.chunk(3), strict=True):
                    converted[f"{new}attention.{name}_proj.{kind}"] = part.clone()
            for hf_name, timm_name in _BLOCK_NAMES.items():
                if f"{old}{timm_name}.{kind}" in state_dict:
                    converted[f"{new}{hf_name}.{kind}"] = state_dict[f"{old}{timm_name}.{kind}"]
    return converted


def resample_position_embeddings(pos_embed: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(1, 1 + g*g, D) position embeddings (CLS first) -> (1, 1 + grid_size**2, D), the patch grid resized bicubically.

    MAE's ``interpolate_pos_embed``: the CLS entry is kept, the g x g grid goes through ``F.interpolate(bicubic,
    align_corners=False)``. Used when fine-tuning at another resolution than pretraining's.
    """
    old_grid = math.isqrt(pos_embed.shape[1] - 1)
    if old_grid * old_grid != pos_embed.shape[1] - 1:
        raise ValueError(f"position embeddings {tuple(pos_embed.shape)} are not a CLS token plus a square grid")
    if old_grid == grid_size:
        return pos_embed
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2).float()
    grid = nn.functional.interpolate(grid, size=(grid_size, grid_size), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_size * grid_size, -1).to(pos_embed.dtype)
    return torch.cat([cls, grid], dim=1)


def timm_vit_kwargs(config, image_size: int | None = None) -> dict:
    """``timm.create_model`` arguments of the ViT encoder a GPA / ViTMAE / ViT ``config`` describes (JSON-safe: the
    LayerNorm eps goes separately, through [`set_layer_norm_eps`] or [`timm_vit`])."""
    if config.hidden_act != "gelu":
        raise ValueError(f"hidden_act={config.hidden_act!r}: timm's ViT blocks use exact GELU; convert 'gelu' ViTs.")
    return {
        "img_size": image_size or config.image_size,
        "patch_size": config.patch_size,
        "in_chans": config.num_channels,
        "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size / config.hidden_size,
        "qkv_bias": config.qkv_bias,
    }


def timm_architecture(config, image_size: int | None = None) -> str:
    """timm's name for the config's shape (``vit_base_patch16_224``...) when timm has one, else ``vit_base_patch16_224``
    (its arguments, [`timm_vit_kwargs`], then set every size)."""
    import timm

    size = _TIMM_SIZES.get((config.hidden_size, config.num_hidden_layers, config.num_attention_heads))
    name = f"vit_{size}_patch{config.patch_size}_{image_size or config.image_size}"
    return name if size is not None and timm.is_model(name) else "vit_base_patch16_224"


def set_layer_norm_eps(model: nn.Module, eps: float) -> None:
    """Sets the eps of every ``nn.LayerNorm`` in ``model`` (timm builds them with 1e-6)."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps


def timm_vit(config, image_size: int | None = None, **kwargs) -> nn.Module:
    """A timm ``VisionTransformer`` of the config's shape and LayerNorm eps (``kwargs``: ``num_classes``,
    ``global_pool``, ``drop_path_rate``...), with random weights."""
    import timm

    norm_layer = functools.partial(nn.LayerNorm, eps=config.layer_norm_eps)
    arguments = {**timm_vit_kwargs(config, image_size), "norm_layer": norm_layer, **kwargs}
    return timm.create_model(timm_architecture(config, image_size), pretrained=False, **arguments)


def vit_config_from_timm(
    state_dict: Mapping[str, torch.Tensor], num_attention_heads: int, layer_norm_eps: float = 1e-6
):
    """The ``ViTConfig`` of timm ViT weights: sizes from the shapes, heads and eps (not in weights) given."""
    from transformers import ViTConfig

    hidden_size, num_channels, patch_size, _ = state_dict["patch_embed.proj.weight"].shape
    grid = math.isqrt(state_dict["pos_embed"].shape[1] - 1)
    depth = len({m.group(1) for key in state_dict if (m := re.match(r"blocks\.(\d+)\.", key))})
    return ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=num_attention_heads,
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        image_size=grid * patch_size,
        patch_size=patch_size,
        num_channels=num_channels,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        layer_norm_eps=layer_norm_eps,
    )


def _read_timm_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """A safetensors file or a ``torch.save`` checkpoint (MAE's keep the weights under ``"model"``)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint.get("model", checkpoint.get("state_dict", checkpoint))


def write_timm_file(model_name_or_path: str, output: str, layout: str = "safetensors") -> tuple[int, float]:
    """The encoder of a GPA / ViTMAE / ViT checkpoint -> ``output`` in timm's names: a safetensors file (the LayerNorm
    eps in its metadata) or, ``layout="mae"``, ``torch.save({"model": weights})``. Returns the tensor count and the
    encoder's LayerNorm eps."""
    from safetensors.torch import save_file
    from transformers import ViTModel

    from ..evaluation.features import load_vit

    encoder = load_vit(ViTModel, model_name_or_path, add_pooling_layer=False)
    weights = {key: value.contiguous() for key, value in timm_state_dict(encoder.state_dict()).items()}
    if layout == "mae":
        torch.save({"model": weights}, output)
    else:
        save_file(weights, output, metadata={"layer_norm_eps": str(encoder.config.layer_norm_eps)})
    return len(weights), encoder.config.layer_norm_eps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_timm = commands.add_parser("to-timm", help="A GPA / ViTMAE / ViT checkpoint's encoder -> timm safetensors.")
    to_timm.add_argument("--model_name_or_path", required=True)
    to_timm.add_argument("--output", required=True, help="The .safetensors (or, --layout mae, .pth) file to write.")
    to_timm.add_argument(
        "--layout", choices=TIMM_LAYOUTS, default="safetensors", help="mae: {'model': weights}, as MAE's .pth files."
    )
    from_timm = commands.add_parser("from-timm", help="timm / MAE ViT weights -> a ViTModel checkpoint directory.")
    from_timm.add_argument("--checkpoint", required=True, help="A .safetensors, .pth or .bin file.")
    from_timm.add_argument("--num_attention_heads", type=int, required=True, help="Not in the weights: 12 for ViT-B.")
    from_timm.add_argument("--layer_norm_eps", type=float, default=1e-6, help="timm's and MAE's: 1e-6.")
    from_timm.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "to-timm":
        count, layer_norm_eps = write_timm_file(args.model_name_or_path, args.output, args.layout)
        print(f"{count} timm tensors (layer_norm_eps {layer_norm_eps}) -> {args.output}")
        return
    from transformers import ViTModel

    weights = _read_timm_checkpoint(args.checkpoint)
    config = vit_config_from_timm(weights, args.num_attention_heads, args.layer_norm_eps)
    if config.hidden_size % args.num_attention_heads:
        raise ValueError(f"--num_attention_heads {args.num_attention_heads} does not divide width {config.hidden_size}")
    model = ViTModel(config, add_pooling_layer=False)
    converted = hf_state_dict(weights)
    missing, _ = model.load_state_dict(converted, strict=False)
    if missing:
        raise ValueError(f"{args.checkpoint!r} lacks {len(missing)} encoder weights, e.g. {missing[0]!r}.")
    model.save_pretrained(args.output_dir)
    left_out = len(weights) - sum(key in weights for key in timm_state_dict(model.state_dict()))
    print(f"ViTModel ({len(converted)} tensors; {left_out} non-encoder tensors left out) -> {args.output_dir}")


if __name__ == "__main__":
    from ..command_line import exit_on_bad_input

    exit_on_bad_input(main)
