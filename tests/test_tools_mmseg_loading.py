"""modeling_gpa.tools.mmseg_loading: mmsegmentation's own converter and MAE backbone take our weights."""

import pytest
import torch
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.tools.mmseg_loading import MAE_ADE20K_CONFIG, backbone_settings, check_mmseg_loading, mmseg_resource


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 28-pixel RGB GPA with MAE's LayerNorm eps, its weights moved off their initial values (LayerNorm included)."""
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(num_channels=3, layer_norm_eps=1e-6)))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("gpa")
    model.save_pretrained(path)
    return path


def test_the_mae_ade20k_config_is_the_papers_backbone():
    settings = backbone_settings(mmseg_resource(MAE_ADE20K_CONFIG))
    assert settings["type"] == "MAE" and tuple(settings["img_size"]) == (512, 512)
    assert (settings["embed_dims"], settings["num_layers"], settings["num_heads"]) == (768, 12, 12)
    assert list(settings["out_indices"]) == [3, 5, 7, 11] and settings["init_values"] == 1.0


@pytest.mark.slow
def test_mmsegmentation_loads_every_weight_and_computes_our_feature_maps(checkpoint, tmp_path):
    # 56-pixel crops on a 28-pixel checkpoint: mmsegmentation resizes the position table as for 512 on 224.
    report = check_mmseg_loading(str(checkpoint), tmp_path, overrides={"img_size": (56, 56), "out_indices": [0, 2]})
    assert report["keys"]["missing"] == []
    # The final norm (final_norm=False in MAE's config) and the converter's copy of the patch embedding's old names:
    # what MAE's own file leaves over too.
    assert report["keys"]["unexpected"] == [
        "norm.bias",
        "norm.weight",
        "patch_embed.proj.bias",
        "patch_embed.proj.weight",
    ]
    assert [(entry["block"], entry["shape"]) for entry in report["feature_maps"]] == [
        (1, [1, 32, 14, 14]),
        (3, [1, 32, 14, 14]),
    ]
    assert max(entry["max_abs_diff"] for entry in report["feature_maps"]) < 1e-5
