"""Our weights in mmsegmentation's own MAE backbone, loaded the way its MAE UperNet config loads MAE's file.

The path a user takes to the paper's ADE20K numbers in mmsegmentation, each step by that tool's own code:

1. ``python -m modeling_gpa.convert to-timm --layout mae`` writes the encoder in ``mae_pretrain_vit_base.pth``'s names;
2. mmsegmentation's ``tools/model_converters/beit2mmseg.py`` renames it (run as a script, from the ``mmseg/.mim``
   copy its wheel ships);
3. its ``MAE`` backbone, built from the ``backbone`` of ``configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py``
   with ``pretrained`` pointing at that file (as ``EncoderDecoder`` passes ``model.pretrained``), loads it in
   ``init_weights``: position table resized bicubically to the crop, ``load_state_dict(strict=False)``.

[`check_mmseg_loading`] then lists the keys the backbone did not get and those it left over, and compares its
feature maps with ``GPABackbone``'s on one image. Needs the ``mmseg`` extra: mmsegmentation 1.x with mmengine and
mmcv-lite (mmcv without its compiled ops, which the backbone does not use).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

MAE_ADE20K_CONFIG = "configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"
BEIT_CONVERTER = "tools/model_converters/beit2mmseg.py"
# Keys mmsegmentation's MAE backbone has and MAE's own file lacks: layer scale (identity at the config's
# init_values=1.0) and BEiT's relative position bias (zeros in MAE's attention). The same as MAE's file gives.
NOT_IN_MAES_FILE = ("gamma_1", "gamma_2", "relative_position_bias_table", "relative_position_index")


class _MissingCompiledOps(types.ModuleType):
    """Stands for ``mmcv._ext`` where mmcv-lite has none: ``mmseg.utils`` imports ``mmcv.ops`` (which looks its ops
    up by name) though the MAE backbone calls none of them; calling one raises."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def compiled_op(*args, **kwargs):
            raise RuntimeError(f"mmcv's compiled op {name} is not installed (mmcv-lite): install mmcv with its ops.")

        return compiled_op


def import_mmseg() -> types.ModuleType:
    """``mmseg``, importable beside mmcv-lite; a one-line ImportError saying what to install when it is missing."""
    if importlib.util.find_spec("mmcv") is None or importlib.util.find_spec("mmseg") is None:
        raise ImportError("mmsegmentation is not installed: pip install -e '.[mmseg]'.")
    try:
        import mmcv._ext  # noqa: F401
    except ImportError:
        sys.modules["mmcv._ext"] = _MissingCompiledOps("mmcv._ext")
    import mmseg

    return mmseg


def mmseg_resource(relative_path: str) -> Path:
    """A config or tool that mmsegmentation's wheel ships under ``mmseg/.mim``."""
    path = Path(import_mmseg().__file__).parent / ".mim" / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this mmsegmentation install lacks its .mim configs and tools.")
    return path


def backbone_settings(config_path: str | Path) -> dict:
    """The ``model.backbone`` dict of an mmsegmentation config, with its ``_base_`` files merged in."""
    from mmengine.config import Config

    return Config.fromfile(str(config_path)).model.backbone.to_dict()


def convert_for_mmseg(mae_file: str | Path, output: str | Path) -> None:
    """MAE's file layout -> mmsegmentation's backbone names, by its own ``beit2mmseg.py``."""
    converter = mmseg_resource(BEIT_CONVERTER)
    subprocess.run([sys.executable, str(converter), str(mae_file), str(output)], check=True, capture_output=True)


def mmseg_mae_backbone(settings: Mapping, checkpoint: str | Path) -> nn.Module:
    """mmsegmentation's ``MAE`` backbone from a config's ``backbone`` settings, its weights loaded from
    ``checkpoint`` by its own ``init_weights``; in eval mode."""
    import_mmseg()
    from mmseg.models.backbones import MAE

    backbone = MAE(**{key: value for key, value in settings.items() if key != "type"}, pretrained=str(checkpoint))
    backbone.init_weights()
    backbone.eval()
    return backbone


def architecture_settings(config) -> dict:
    """A ViT config's shape in the ``MAE`` backbone's argument names (the rest of a config's backbone settings, such
    as crop size and output blocks, stay the config's)."""
    return {
        "patch_size": config.patch_size,
        "in_channels": config.num_channels,
        "embed_dims": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size // config.hidden_size,
    }


def key_report(checkpoint: Mapping[str, torch.Tensor], backbone: nn.Module) -> dict[str, list[str]]:
    """The backbone's keys the checkpoint lacks (``missing``: those MAE's own file lacks too are left out, see
    ``NOT_IN_MAES_FILE``) and the checkpoint's keys the backbone has no place for (``unexpected``)."""
    own = set(backbone.state_dict())
    missing = [key for key in sorted(own - set(checkpoint)) if not key.endswith(NOT_IN_MAES_FILE)]
    return {"missing": missing, "unexpected": sorted(set(checkpoint) - own)}


def check_mmseg_loading(
    model_name_or_path: str,
    work_dir: str | Path,
    overrides: Mapping | None = None,
    config_path: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Converts ``model_name_or_path``'s encoder, loads it into mmsegmentation's MAE backbone (the settings of
    ``config_path``, default its MAE ADE20K config, with the checkpoint's width, depth, heads and patch size, then
    ``overrides``) and compares the backbone's feature maps with ``GPABackbone``'s at the same blocks on one
    (1, C, H, W) normal image of the config's crop size.

    Returns the keys (``key_report``), the LayerNorm eps of each side, and per feature map its shape and the largest
    absolute difference."""
    from transformers import AutoConfig

    from ..modeling_gpa import GPABackbone
    from .convert import write_timm_file

    mmseg = import_mmseg()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    mae_file, mmseg_file = work_dir / "mae_layout.pth", work_dir / "mmseg_backbone.pth"
    write_timm_file(model_name_or_path, str(mae_file), layout="mae")
    convert_for_mmseg(mae_file, mmseg_file)
    config_path = config_path or mmseg_resource(MAE_ADE20K_CONFIG)
    config = AutoConfig.from_pretrained(model_name_or_path)
    settings = {**backbone_settings(config_path), **architecture_settings(config), **(overrides or {})}
    theirs = mmseg_mae_backbone(settings, mmseg_file)
    block_indices = [index + 1 for index in settings["out_indices"]]  # stage0 is the stem here
    ours = GPABackbone.from_pretrained(model_name_or_path, out_indices=block_indices).eval()
    height, width = settings["img_size"]
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, settings["in_channels"], height, width, generator=generator)
    with torch.no_grad():
        their_maps = theirs(image)
        our_maps = ours(image).feature_maps
    return {
        "mmsegmentation": mmseg.__version__,
        "config": Path(config_path).name,
        "settings": settings,
        "keys": key_report(torch.load(mmseg_file, map_location="cpu", weights_only=True), theirs),
        "layer_norm_eps": {"ours": config.layer_norm_eps, "mmsegmentation": settings["norm_cfg"].get("eps")},
        "feature_maps": [
            {"block": block, "shape": list(their.shape), "max_abs_diff": (their - our).abs().max().item()}
            for block, their, our in zip(block_indices, their_maps, our_maps, strict=True)
        ],
    }
