import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import WITHOUT_THE_PACKAGE, tiny_kwargs
from transformers import (
    AutoBackbone,
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    ViTConfig,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTModel,
)

from modeling_gpa import GPABackbone, GPAConfig, GPAForPreTraining, GPAModel
from modeling_gpa.configuration_gpa import default_out_indices
from modeling_gpa.tools.convert import resample_position_embeddings

# transformers 5.25's AutoBackbone.from_pretrained asks the Hub whether the name is a repository before loading it
# (`hf_api().repo_exists(name)`), which rejects local folders; it then loads exactly as AutoModel does. Tests stand a
# local answer in for the Hub's.
LOCAL_HUB = """
import transformers.models.auto.auto_factory as auto_factory
from pathlib import Path

class LocalFolders:
    def repo_exists(self, name):
        return Path(name).is_dir()

auto_factory.hf_api = LocalFolders
"""


class LocalFolders:
    def repo_exists(self, name):
        return Path(name).is_dir()


@pytest.fixture
def local_hub(monkeypatch):
    monkeypatch.setattr("transformers.models.auto.auto_factory.hf_api", LocalFolders)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(num_hidden_layers=4))).eval()
    directory = tmp_path_factory.mktemp("gpa")
    model.save_pretrained(directory)
    return directory


def encoder_maps(encoder, pixel_values, stages):
    """(B, D, h, w) maps of the encoder's hidden states ``stages`` (0 = embeddings), reshaped by hand."""
    with torch.no_grad():
        hidden = encoder(pixel_values, output_hidden_states=True, interpolate_pos_encoding=True).hidden_states
    height, width = (side // 4 for side in pixel_values.shape[-2:])
    return [hidden[stage][:, 1:].permute(0, 2, 1).reshape(len(pixel_values), -1, height, width) for stage in stages]


def test_feature_maps_are_the_encoders_hidden_states_for_gpa_vitmae_and_vit(checkpoint, local_hub, tmp_path):
    pixel_values = torch.randn(2, 1, 28, 36, generator=torch.Generator().manual_seed(0))
    backbone = AutoBackbone.from_pretrained(checkpoint, out_indices=[0, 2, 4]).eval()
    assert isinstance(backbone, GPABackbone) and backbone.out_features == ["stem", "stage2", "stage4"]
    assert backbone.channels == [32, 32, 32]
    with torch.no_grad():
        maps = backbone(pixel_values).feature_maps
    expected = encoder_maps(GPAModel.from_pretrained(checkpoint).eval(), pixel_values, [0, 2, 4])
    for ours, theirs in zip(maps, expected, strict=True):
        assert ours.shape == (2, 32, 7, 9)
        assert (ours - theirs).abs().max() < 1e-5

    torch.manual_seed(1)
    ViTMAEForPreTraining(ViTMAEConfig(**tiny_kwargs(num_hidden_layers=4))).save_pretrained(tmp_path / "vitmae")
    ViTModel(ViTConfig(**tiny_kwargs(num_hidden_layers=4)), add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    for name in ("vitmae", "vit"):
        backbone = GPABackbone.from_pretrained(tmp_path / name, out_indices=[3]).eval()
        with torch.no_grad():
            ours = backbone(pixel_values).feature_maps[0]
        theirs = encoder_maps(GPAModel.from_pretrained(tmp_path / name).eval(), pixel_values, [3])[0]
        assert (ours - theirs).abs().max() < 1e-5, name


def test_a_bright_patch_stays_at_its_place_in_every_map():
    torch.manual_seed(0)
    backbone = GPABackbone(GPAConfig(**tiny_kwargs(num_hidden_layers=4, out_indices=[0, 1, 2, 3, 4]))).eval()
    blank = torch.zeros(1, 1, 56, 56)
    for row, col in ((2, 11), (9, 3)):
        bright = blank.clone()
        bright[..., 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 5.0
        with torch.no_grad():
            changes = [(a - b).norm(dim=1)[0] for a, b in zip(backbone(bright)[0], backbone(blank)[0], strict=True)]
        for change in changes:
            assert change.shape == (14, 14)
            assert divmod(int(change.argmax()), 14) == (row, col)


def test_position_table_is_interpolated_to_the_input_as_maes():
    torch.manual_seed(0)
    config = GPAConfig(**tiny_kwargs(image_size=224, patch_size=16, num_hidden_layers=1, out_indices=[0]))
    backbone = GPABackbone(config).eval()
    with torch.no_grad():
        stem = backbone(torch.zeros(1, 1, 512, 512)).feature_maps[0]
        table = resample_position_embeddings(backbone.vit.embeddings.position_embeddings, 32)
    assert stem.shape == (1, 32, 32, 32)
    bias = backbone.vit.embeddings.patch_embeddings.projection.bias
    expected = (table[0, 1:] + bias).T.reshape(32, 32, 32)
    assert (stem[0] - expected).abs().max() < 1e-5


def test_four_scale_neck_drop_path_and_defaults():
    assert default_out_indices(12) == [4, 6, 8, 12] and default_out_indices(24) == [8, 12, 16, 24]
    assert GPAConfig().out_features == ["stage4", "stage6", "stage8", "stage12"]
    with pytest.raises(ValueError, match="out_indices=.*add_fpn=True"):
        GPAConfig(**tiny_kwargs(add_fpn=True, out_indices=[1, 2]))
    torch.manual_seed(0)
    config = GPAConfig(**tiny_kwargs(num_hidden_layers=4, add_fpn=True, drop_path_rate=0.3))
    backbone = GPABackbone(config)
    rates = [layer.dropout[1].rate for layer in backbone.vit.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    pixel_values = torch.randn(4, 1, 32, 32)
    assert [tuple(m.shape) for m in backbone.eval()(pixel_values).feature_maps] == [
        (4, 32, 32, 32),
        (4, 32, 16, 16),
        (4, 32, 8, 8),
        (4, 32, 4, 4),
    ]
    with torch.no_grad():
        first, second = backbone.eval()(pixel_values)[0][2], backbone(pixel_values)[0][2]
        assert torch.equal(first, second)
        torch.manual_seed(1)
        assert not torch.equal(backbone.train()(pixel_values)[0][2], first)
    with pytest.raises(ValueError, match="multiples of patch_size 4; got 30x32"):
        backbone(torch.randn(1, 1, 30, 32))


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    backbone = GPABackbone(GPAConfig(**tiny_kwargs(num_hidden_layers=4, add_fpn=True, drop_path_rate=0.1)))
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1)
    pixel_values = torch.randn(2, 1, 28, 28)
    sum(m.square().mean() for m in backbone(pixel_values).feature_maps).backward()
    optimizer.step()
    backbone.save_pretrained(tmp_path)
    loaded = GPABackbone.from_pretrained(tmp_path)
    assert loaded.out_indices == [1, 2, 3, 4] and loaded.config.add_fpn and loaded.config.drop_path_rate == 0.1
    torch.testing.assert_close(loaded.state_dict(), backbone.state_dict())
    with torch.no_grad():
        for ours, theirs in zip(loaded.eval()(pixel_values)[0], backbone.eval()(pixel_values)[0], strict=True):
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("detector", ["upernet", "conditional_detr"])
def test_transformers_heads_train_on_the_backbone(detector):
    torch.manual_seed(0)
    pixel_values = torch.randn(2, 3, 32, 32)
    if detector == "upernet":
        backbone_config = GPAConfig(**tiny_kwargs(num_channels=3, num_hidden_layers=4, add_fpn=True))
        config = UperNetConfig(backbone_config=backbone_config, hidden_size=16, auxiliary_channels=8, num_labels=5)
        model = UperNetForSemanticSegmentation(config)
        outputs = model(pixel_values, labels=torch.randint(0, 5, (2, 32, 32)))
        assert outputs.logits.shape == (2, 5, 32, 32)
    else:
        backbone_config = GPAConfig(**tiny_kwargs(num_channels=3, num_hidden_layers=2, out_indices=[2]))
        sizes = dict(d_model=16, encoder_ffn_dim=16, decoder_ffn_dim=16, encoder_attention_heads=2)
        sizes.update(decoder_attention_heads=2, encoder_layers=1, decoder_layers=1, num_queries=4, num_labels=3)
        model = ConditionalDetrForObjectDetection(ConditionalDetrConfig(backbone_config=backbone_config, **sizes))
        boxes = {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.4, 0.3, 0.2]])}
        outputs = model(pixel_values=pixel_values, labels=[boxes, boxes])
        assert outputs.logits.shape == (2, 4, 3)
    assert isinstance(model.backbone if detector == "upernet" else model.model.backbone.model, GPABackbone)
    outputs.loss.backward()
    assert torch.isfinite(outputs.loss)
    gradients = [p.grad for n, p in model.named_parameters() if "patch_embeddings" in n]
    assert gradients and all(g is not None and g.abs().sum() > 0 for g in gradients)


@pytest.mark.slow
def test_auto_backbone_through_trust_remote_code_without_the_package(checkpoint, tmp_path):
    pixel_values = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    save_file({"pixel_values": pixel_values}, tmp_path / "inputs.safetensors")
    script = (
        WITHOUT_THE_PACKAGE
        + LOCAL_HUB
        + textwrap.dedent(
            f"""
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoBackbone

        backbone = AutoBackbone.from_pretrained({str(checkpoint)!r}, trust_remote_code=True, out_indices=[2, 4])
        assert type(backbone).__module__.startswith("transformers_modules."), type(backbone).__module__
        pixel_values = load_file({str(tmp_path / "inputs.safetensors")!r})["pixel_values"]
        with torch.no_grad():
            maps = backbone.eval()(pixel_values).feature_maps
        outputs = {{"stage2": maps[0].contiguous(), "stage4": maps[1].contiguous()}}
        save_file(outputs, {str(tmp_path / "outputs.safetensors")!r})
        """
        )
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = load_file(tmp_path / "outputs.safetensors")
    expected = encoder_maps(GPAModel.from_pretrained(checkpoint).eval(), pixel_values, [2, 4])
    assert (outputs["stage2"] - expected[0]).abs().max() < 1e-5
    assert (outputs["stage4"] - expected[1]).abs().max() < 1e-5
    assert Path(checkpoint, "config.json").read_text().count('"AutoBackbone"') == 1
