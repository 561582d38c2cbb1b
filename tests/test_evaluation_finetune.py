"""ViT and Swin layer ids and MAE's (SimMIM's) layer-wise learning-rate decay."""

from transformers import SwinConfig, SwinForImageClassification, ViTConfig, ViTForImageClassification

from modeling_gpa.evaluation import (
    param_groups_layer_decay,
    swin_layer_id,
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
