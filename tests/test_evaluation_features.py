"""Loading any GPA, ViTMAE or ViT checkpoint as a ViTModel encoder, and pooling its features."""

import pytest
import torch
from tiny import swin_student, tiny_kwargs
from transformers import (
    BertConfig,
    BertModel,
    SwinModel,
    ViTConfig,
    ViTForImageClassification,
    ViTMAEConfig,
    ViTModel,
)

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.evaluation import (
    check_pooling,
    encode,
    load_encoder,
    load_vit,
    pool,
)

VIT = dict(image_size=28, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=3, num_attention_heads=4)


@pytest.fixture(scope="module")
def gpa_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs()))
    path = tmp_path_factory.mktemp("gpa")
    model.save_pretrained(path)
    return path, model


def test_load_encoder_reads_the_gpa_encoder(gpa_dir):
    path, model = gpa_dir
    encoder = load_encoder(str(path))
    assert isinstance(encoder, ViTModel) and not encoder.training
    for name, tensor in model.vit.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[name], tensor)
    features = encode(encoder, torch.randn(5, 1, 28, 28), "mean", batch_size=2)
    assert features.shape == (5, 32) and torch.isfinite(features).all()


def test_load_vit_replaces_the_load_report_with_one_line_on_new_weights(gpa_dir, capfd, caplog):
    path, _ = gpa_dir
    with caplog.at_level("INFO", logger="modeling_gpa.evaluation"):
        load_encoder(str(path))
        classifier = load_vit(ViTForImageClassification, str(path), "vit.", num_labels=3)
    assert "LOAD REPORT" not in capfd.readouterr().err
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == ["Newly initialised (train them before use): classifier.bias, classifier.weight."]
    assert classifier.classifier.out_features == 3


@pytest.mark.parametrize("kind", ["vit_mae", "vit"])
def test_load_encoder_reads_hugging_face_checkpoints(tmp_path, kind):
    if kind == "vit_mae":
        from transformers import ViTMAEForPreTraining

        model = ViTMAEForPreTraining(ViTMAEConfig(**VIT, intermediate_size=64, decoder_hidden_size=32))
    else:
        model = ViTModel(ViTConfig(**VIT, intermediate_size=64))
    model.save_pretrained(tmp_path)
    encoder = load_encoder(str(tmp_path))
    torch.testing.assert_close(
        encoder.embeddings.patch_embeddings.projection.weight,
        model.get_input_embeddings().projection.weight
        if kind == "vit"
        else model.vit.embeddings.patch_embeddings.projection.weight,
    )


def test_a_swin_checkpoint_loads_as_a_swin_encoder_whose_features_are_its_tokens_mean(tmp_path):
    simmim = swin_student().eval()
    simmim.save_pretrained(tmp_path)
    encoder = load_encoder(str(tmp_path))
    assert type(encoder) is SwinModel and encoder.pooler is None and not encoder.training
    pixel_values = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        tokens = simmim.swin(pixel_values).last_hidden_state
    # Two stages: the 16x16 patch grid merged once to 8x8 tokens of 2 * embed_dim.
    assert tokens.shape == (3, 64, 32)
    torch.testing.assert_close(encode(encoder, pixel_values, pooling="mean", batch_size=2), tokens.mean(dim=1))
    with pytest.raises(ValueError, match=r"^A Swin encoder has no CLS token: pass --pooling mean\.$"):
        check_pooling(encoder, "cls")
    with pytest.raises(ValueError, match="no CLS token"):
        encode(encoder, pixel_values, pooling="cls")


def test_load_encoder_rejects_a_checkpoint_without_an_encoder(tmp_path):
    BertModel(BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="has no encoder weights"):
        load_encoder(str(tmp_path))
    with pytest.raises(ValueError, match="Cannot load an encoder"):
        load_encoder(str(tmp_path / "missing"))


def test_pool_takes_cls_or_mean_of_patches():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    torch.testing.assert_close(pool(hidden, "cls"), hidden[:, 0])
    torch.testing.assert_close(pool(hidden, "mean"), hidden[:, 1:].mean(1))
    with pytest.raises(ValueError, match="allowed values: 'cls', 'mean'"):
        pool(hidden, "max")
