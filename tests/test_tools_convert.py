"""Encoder weights both ways between Transformers' ViTs and timm's VisionTransformer."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import tiny_kwargs
from transformers import ViTConfig, ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.tools.convert import (
    hf_state_dict,
    main,
    timm_state_dict,
    timm_vit,
    vit_config_from_timm,
)

# ViT-B/16's shape (224 px, 16 px patches, 12 blocks, MLP ratio 4) at a small width.
VIT_B16_NARROW = dict(
    image_size=224, patch_size=16, hidden_size=48, num_hidden_layers=12, num_attention_heads=4, intermediate_size=192
)


def test_timm_features_equal_ours_for_vit_b16_shape():
    torch.manual_seed(0)
    config = ViTConfig(**VIT_B16_NARROW)
    ours = ViTModel(config, add_pooling_layer=False).eval()
    timm_model = timm_vit(config, num_classes=0, global_pool="token").eval()
    timm_model.load_state_dict(timm_state_dict(ours.state_dict()), strict=True)
    assert {m.eps for m in timm_model.modules() if isinstance(m, torch.nn.LayerNorm)} == {config.layer_norm_eps}
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        difference = (ours(images).last_hidden_state - timm_model.forward_features(images)).abs().max()
    assert difference < 1e-5


def test_round_trip_gives_back_every_tensor():
    torch.manual_seed(0)
    ours = ViTModel(ViTConfig(**VIT_B16_NARROW), add_pooling_layer=False)
    converted = timm_state_dict(ours.state_dict())
    assert converted["blocks.3.attn.qkv.weight"].shape == (3 * 48, 48)
    assert "blocks.3.attn.proj.weight" in converted and "patch_embed.proj.weight" in converted
    back = hf_state_dict(converted)
    assert back.keys() == ours.state_dict().keys()
    assert all(torch.equal(back[key], value) for key, value in ours.state_dict().items())


def test_a_gpa_pretraining_checkpoint_gives_its_encoder_only():
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs()))
    converted = timm_state_dict(model.state_dict())
    assert not any(key.startswith(("decoder", "vit.", "teacher")) for key in converted)
    torch.testing.assert_close(converted["pos_embed"], model.vit.embeddings.position_embeddings)
    _, key_bias, _ = converted["blocks.1.attn.qkv.bias"].chunk(3)
    torch.testing.assert_close(key_bias, model.state_dict()["vit.layers.1.attention.k_proj.bias"])
    with pytest.raises(ValueError, match="No ViT encoder in these weights"):
        timm_state_dict({"linear.weight": torch.zeros(2, 2)})


def test_command_line_converts_both_ways(tmp_path, capsys):
    torch.manual_seed(0)
    GPAForPreTraining(GPAConfig(**tiny_kwargs())).save_pretrained(tmp_path / "gpa")
    main(["to-timm", "--model_name_or_path", str(tmp_path / "gpa"), "--output", str(tmp_path / "timm.safetensors")])
    weights = load_file(tmp_path / "timm.safetensors")
    assert weights["patch_embed.proj.weight"].shape == (32, 1, 4, 4)
    # An MAE-style checkpoint: timm names plus a decoder, which is left out.
    save_file({**weights, "decoder_embed.weight": torch.zeros(8, 32)}, tmp_path / "mae.safetensors")
    main(
        ["from-timm", "--checkpoint", str(tmp_path / "mae.safetensors"), "--num_attention_heads", "4"]
        + ["--layer_norm_eps", "1e-12", "--output_dir", str(tmp_path / "vit")]
    )
    assert "1 non-encoder tensors left out" in capsys.readouterr().out
    restored = ViTModel.from_pretrained(tmp_path / "vit", add_pooling_layer=False)
    original = ViTModel.from_pretrained(tmp_path / "gpa", add_pooling_layer=False)
    assert all(torch.equal(restored.state_dict()[key], value) for key, value in original.state_dict().items())
    config = vit_config_from_timm(weights, 4)
    assert (config.image_size, config.patch_size, config.num_hidden_layers, config.intermediate_size) == (28, 4, 3, 64)


def test_mae_layout_has_maes_keys_and_shapes_and_reads_back(tmp_path):
    torch.manual_seed(0)
    decoder = dict(decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2)
    model = GPAForPreTraining(GPAConfig(**VIT_B16_NARROW, **decoder, decoder_intermediate_size=32))
    model.save_pretrained(tmp_path / "gpa")
    path = tmp_path / "gpa-mae.pth"
    main(["to-timm", "--layout", "mae", "--model_name_or_path", str(tmp_path / "gpa"), "--output", str(path)])
    checkpoint = torch.load(path, weights_only=True)
    assert list(checkpoint) == ["model"]
    # mae_pretrain_vit_base.pth's layout: timm's vit_base_patch16_224 without its head (at a small width).
    timm_model = timm_vit(model.config, num_classes=0)
    assert len(expected_keys := timm_model.state_dict()) == 4 + 12 * 12 + 2 and "head.weight" not in expected_keys
    expected = {key: tuple(value.shape) for key, value in timm_model.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in checkpoint["model"].items()} == expected
    timm_model.load_state_dict(checkpoint["model"])
    main(["from-timm", "--checkpoint", str(path), "--num_attention_heads", "4", "--output_dir", str(tmp_path / "vit")])
    restored = ViTModel.from_pretrained(tmp_path / "vit", add_pooling_layer=False).state_dict()
    original = ViTModel.from_pretrained(tmp_path / "gpa", add_pooling_layer=False).state_dict()
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[key], value) for key, value in original.items())
