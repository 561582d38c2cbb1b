"""ViT layer ids and MAE's layer-wise learning-rate decay."""

from transformers import ViTConfig, ViTForImageClassification

from modeling_gpa.evaluation import (
    param_groups_layer_decay,
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
