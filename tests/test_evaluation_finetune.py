"""The timm classifier of a checkpoint (drop path, pooling, head, position embeddings), timm's layer-wise lr decay
against MAE's formula, and Swin's (SimMIM's) layer ids and lr decay."""

import pytest
import torch
from tiny import tiny_kwargs
from transformers import SwinConfig, SwinForImageClassification, ViTConfig, ViTForImageClassification, ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.evaluation import (
    param_groups_layer_decay,
    swin_layer_id,
    timm_classifier,
    timm_param_groups,
    vit_layer_id,
)

VIT = dict(image_size=28, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=3, num_attention_heads=4)


def test_layer_decay_groups_follow_beit():
    model = ViTForImageClassification(ViTConfig(**VIT, intermediate_size=64, num_labels=5))
    groups = param_groups_layer_decay(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale[id(named["vit.embeddings.cls_token"])] == (0.5**4, 0.0)
    assert scale[id(named["vit.embeddings.patch_embeddings.projection.weight"])] == (0.5**4, 0.05)
    assert scale[id(named["vit.layers.0.attention.q_proj.weight"])] == (0.5**3, 0.05)
    assert scale[id(named["vit.layers.2.layernorm_before.bias"])] == (0.5**1, 0.0)
    assert scale[id(named["classifier.weight"])] == (1.0, 0.05)
    assert sum(len(g["params"]) for g in groups) == len(named)
    assert vit_layer_id("vit.layernorm.weight", 3) == 4


def test_swin_layer_decay_groups_follow_simmim():
    """SimMIM's get_swin_layer_id: blocks numbered across stages, the patch merging with its stage's last block."""
    config = SwinConfig(image_size=32, patch_size=4, num_channels=1, embed_dim=16, depths=[2, 3], num_heads=[1, 2])
    model = SwinForImageClassification(SwinConfig(**{**config.to_dict(), "window_size": 2, "num_labels": 4}))
    groups = param_groups_layer_decay(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    # 5 blocks: embeddings 0, blocks 1..5, final norm and classifier 6.
    assert scale[id(named["swin.embeddings.patch_embeddings.projection.weight"])] == (0.5**6, 0.05)
    assert scale[id(named["swin.encoder.layers.0.blocks.1.mlp.fc1.weight"])] == (0.5**4, 0.05)
    assert scale[id(named["swin.encoder.layers.0.downsample.reduction.weight"])] == (0.5**4, 0.05)
    assert scale[id(named["swin.encoder.layers.1.blocks.0.attention.q_proj.weight"])] == (0.5**3, 0.05)
    table = "swin.encoder.layers.1.blocks.2.attention.relative_position_bias.relative_position_bias_table"
    assert scale[id(named[table])] == (0.5**1, 0.0)
    assert scale[id(named["classifier.weight"])] == (1.0, 0.05)
    assert sum(len(g["params"]) for g in groups) == len(named)
    assert swin_layer_id("swin.layernorm.weight", [2, 3]) == 6


def _checkpoint(tmp_path, **overrides):
    """A seeded tiny GPA checkpoint: 28x28 gray images, 4x4 patches, 3 blocks of width 32."""
    torch.manual_seed(0)
    path = tmp_path / "gpa"
    GPAForPreTraining(GPAConfig(**tiny_kwargs(**overrides))).save_pretrained(path)
    return path


def _mae_layer_scale(name: str, depth: int, layer_decay: float) -> float:
    """MAE's util/lr_decay.py: get_layer_id_for_vit, then layer_decay ** (depth + 1 - layer_id)."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        layer_id = 0
    elif name.startswith("blocks"):
        layer_id = int(name.split(".")[1]) + 1
    else:
        layer_id = depth + 1
    return layer_decay ** (depth + 1 - layer_id)


def test_timm_layer_decay_groups_are_maes(tmp_path):
    model = timm_classifier(str(_checkpoint(tmp_path)), {0: "a", 1: "b"}, drop_path=0.1)
    groups = timm_param_groups(model, lr=2.0, weight_decay=0.05, layer_decay=0.65)
    seen = 0
    names = {id(param): name for name, param in model.timm_model.named_parameters()}
    for group in groups:
        for param in group["params"]:
            name = names[id(param)]
            scale = _mae_layer_scale(name, 3, 0.65)
            # MAE: no weight decay on 1-D parameters and on no_weight_decay() = {pos_embed, cls_token}.
            decay = 0.0 if param.ndim == 1 or name in ("pos_embed", "cls_token") else 0.05
            assert group["lr_scale"] == pytest.approx(scale) and group["lr"] == pytest.approx(2.0 * scale), name
            assert group["weight_decay"] == decay, name
            seen += 1
    assert seen == len(names)


def test_drop_path_is_active_in_training_and_off_in_eval(tmp_path):
    model = timm_classifier(str(_checkpoint(tmp_path)), {0: "a", 1: "b"}, drop_path=0.3)
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in model.timm_model.blocks]
    assert rates == pytest.approx([0.0, 0.15, 0.3])  # linear over the blocks, as MAE's models_vit
    pixels = torch.randn(4, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, model(pixels).logits)
        model.train()
        torch.manual_seed(1)
        first = model(pixels).logits
        second = model(pixels).logits
    assert not torch.allclose(first, second)
    still = timm_classifier(str(_checkpoint(tmp_path)), {0: "a", 1: "b"}, drop_path=0.0).train()
    with torch.no_grad():
        # Without drop path a training-mode forward is deterministic: the randomness above is drop path's.
        assert torch.equal(still(pixels).logits, still(pixels).logits)


@pytest.mark.parametrize("pooling", ["avg", "cls"])
def test_timm_classifier_carries_the_encoder_and_a_small_new_head(tmp_path, pooling):
    path = _checkpoint(tmp_path)
    model = timm_classifier(str(path), {0: "a", 1: "b", 2: "c"}, pooling=pooling, head_init_std=2e-5).eval()
    encoder = ViTModel.from_pretrained(path, add_pooling_layer=False).eval()
    timm_model = model.timm_model
    assert timm_model.head.weight.std() < 1e-4 and torch.equal(timm_model.head.bias, torch.zeros(3))
    # The checkpoint's LayerNorm eps (Transformers' 1e-12), not timm's 1e-6.
    assert {m.eps for m in timm_model.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-12}
    pixels = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        hidden = encoder(pixels).last_hidden_state
        features = timm_model.forward_head(timm_model.forward_features(pixels), pre_logits=True)
    if pooling == "cls":
        # The CLS token after the pretrained final norm.
        torch.testing.assert_close(features, hidden[:, 0], atol=1e-5, rtol=0)
    else:
        # MAE's global pool: the patch tokens' mean before any norm, into a new fc_norm (ones and zeros).
        assert isinstance(timm_model.norm, torch.nn.Identity)
        blocks_out = encoder(pixels, output_hidden_states=True).hidden_states[-1]
        expected = torch.nn.functional.layer_norm(blocks_out[:, 1:].mean(1), (32,), eps=1e-12)
        torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_position_embeddings_are_resized_bicubically_not_reinitialised(tmp_path):
    path = _checkpoint(tmp_path)
    model = timm_classifier(str(path), {0: "a", 1: "b"}, image_size=56)
    pretrained = ViTModel.from_pretrained(path, add_pooling_layer=False).embeddings.position_embeddings
    pos_embed = model.timm_model.pos_embed.detach()
    assert pos_embed.shape == (1, 1 + 14 * 14, 32)
    torch.testing.assert_close(pos_embed[:, :1], pretrained[:, :1])
    grid = pretrained[:, 1:].reshape(1, 7, 7, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False)
    torch.testing.assert_close(pos_embed[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 196, 32))
    assert model(torch.randn(2, 1, 56, 56)).logits.shape == (2, 2)
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        timm_classifier(str(path), {0: "a"}, image_size=30)
