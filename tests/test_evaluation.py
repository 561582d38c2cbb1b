"""Feature extraction, k-NN, LARS, linear probe, layer-wise lr decay and mixup of modeling_gpa.evaluation."""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_kwargs
from transformers import BertConfig, BertModel, ViTConfig, ViTForImageClassification, ViTMAEConfig, ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.evaluation import (
    LARS,
    MixupCutmixCollator,
    cosine_lr,
    encode,
    find_label_column,
    knn_accuracy,
    knn_scores,
    load_encoder,
    load_vit,
    param_groups_layer_decay,
    pool,
    probe_logits,
    soft_target_cross_entropy,
    train_linear_probe,
    vit_layer_id,
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


def test_load_encoder_rejects_a_checkpoint_without_an_encoder(tmp_path):
    BertModel(BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="has no ViT encoder weights"):
        load_encoder(str(tmp_path))
    with pytest.raises(ValueError, match="Cannot load a ViT encoder"):
        load_encoder(str(tmp_path / "missing"))


def test_pool_takes_cls_or_mean_of_patches():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    torch.testing.assert_close(pool(hidden, "cls"), hidden[:, 0])
    torch.testing.assert_close(pool(hidden, "mean"), hidden[:, 1:].mean(1))
    with pytest.raises(ValueError, match="allowed values: 'cls', 'mean'"):
        pool(hidden, "max")


def test_knn_scores_sum_temperature_weighted_votes():
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[2.0, 0.0]])  # cosine similarities 1.0, 0.8, 0.0, -1.0
    scores = knn_scores(bank, labels, query, num_classes=3, k=2, temperature=0.5)
    torch.testing.assert_close(scores, torch.tensor([[math.exp(2.0), math.exp(1.6), 0.0]]))
    # k above the bank size uses the whole bank.
    everything = knn_scores(bank, labels, query, num_classes=3, k=10, temperature=0.5)
    torch.testing.assert_close(everything[0, 2], torch.tensor(math.exp(-2.0)))


def test_knn_scores_do_not_depend_on_the_query_batch_size():
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(50, 8, generator=generator), torch.randn(13, 8, generator=generator)
    labels = torch.randint(0, 4, (50,), generator=generator)
    one = knn_scores(bank, labels, queries, 4, k=5, batch_size=1)
    torch.testing.assert_close(one, knn_scores(bank, labels, queries, 4, k=5, batch_size=64))
    accuracy = knn_accuracy(bank, labels, bank, labels, 4, k=1)
    assert accuracy == {"top1_accuracy": 1.0, "top4_accuracy": 1.0}  # top-5 capped at the 4 classes


def test_knn_rejects_mismatched_features_and_bad_labels():
    with pytest.raises(ValueError, match="Feature dimension mismatch"):
        knn_scores(torch.randn(4, 8), torch.zeros(4, dtype=torch.long), torch.randn(2, 6), 2)
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        knn_scores(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]), torch.randn(2, 8), 2)


def test_lars_step_matches_maes_formula():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    bias = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = LARS([weight, bias], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.01)
    weight.grad, bias.grad = torch.tensor([[1.0, 0.0]]), torch.tensor([2.0])
    optimizer.step()
    update = torch.tensor([[1.0, 0.0]]) + 0.1 * torch.tensor([[3.0, 4.0]])
    trust = 0.01 * 5.0 / update.norm()
    torch.testing.assert_close(weight.detach(), torch.tensor([[3.0, 4.0]]) - 0.5 * trust * update)
    torch.testing.assert_close(bias.detach(), torch.tensor([0.0]))  # 1-D: no decay, no trust ratio


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", None), ("lars", 6.4)])
def test_linear_probe_separates_gaussian_blobs(optimizer, lr):
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=generator) * 3
    labels = torch.randint(0, 3, (300,), generator=generator)
    features = centres[labels] + torch.randn(300, 16, generator=generator)
    probe = train_linear_probe(
        features, labels, 3, epochs=10, batch_size=32, lr=lr, optimizer=optimizer, warmup_epochs=1
    )
    assert not probe.norm.affine and probe.norm.eps == 1e-6
    accuracy = (probe_logits(probe, features).argmax(1) == labels).float().mean()
    assert accuracy > 0.95
    with pytest.raises(ValueError, match="Feature dimension mismatch"):
        probe_logits(probe, features[:, :8])


def test_cosine_lr_warms_up_then_decays_to_zero():
    assert cosine_lr(0, 100, 10, 1.0) == 0.0
    assert cosine_lr(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert cosine_lr(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 10, 1.0) == pytest.approx(0.0)


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


def _examples():
    """Three 4x4 images filled with 0, 1, 2 and labelled 0, 1, 2: the reversed batch pairs image 0 with image 2."""
    return [{"pixel_values": torch.full((1, 4, 4), float(i)), "labels": i} for i in range(3)]


def _collate(examples):
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples]),
    }


def test_collator_without_mixing_only_smooths_labels():
    batch = MixupCutmixCollator(_collate, num_classes=3, label_smoothing=0.3)(_examples())
    torch.testing.assert_close(batch["pixel_values"], _collate(_examples())["pixel_values"])
    torch.testing.assert_close(batch["labels"][0], torch.tensor([0.8, 0.1, 0.1]))


def test_mixup_mixes_images_and_targets_with_the_same_weight():
    batch = MixupCutmixCollator(_collate, num_classes=3, mixup_alpha=0.8, seed=3)(_examples())
    lam = 1.0 - batch["pixel_values"][0, 0, 0, 0].item() / 2.0
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(batch["labels"][0], torch.tensor([lam, 0.0, 1.0 - lam]))
    torch.testing.assert_close(batch["labels"].sum(1), torch.ones(3))


def test_cutmix_weight_is_the_pasted_area():
    batch = MixupCutmixCollator(_collate, num_classes=3, cutmix_alpha=1.0, seed=1)(_examples())
    image = batch["pixel_values"][0]
    assert set(image.unique().tolist()) <= {0.0, 2.0}
    pasted = (image == 2.0).float().mean().item()
    assert pasted > 0.0
    torch.testing.assert_close(batch["labels"][0], torch.tensor([1.0 - pasted, 0.0, pasted]))


def test_mixup_of_uint8_pipeline_batches_stays_uint8():
    examples = [{"pixel_values": torch.full((1, 4, 4), 100 * i, dtype=torch.uint8), "labels": i} for i in range(3)]
    batch = MixupCutmixCollator(_collate, num_classes=3, mixup_alpha=0.8, seed=3)(examples)
    lam = batch["labels"][0, 0].item()
    assert batch["pixel_values"].dtype == torch.uint8
    assert batch["pixel_values"][0, 0, 0, 0].item() == round(200 * (1 - lam))


def test_soft_target_cross_entropy_matches_cross_entropy_on_one_hot():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, F.one_hot(labels, 3).float()), F.cross_entropy(logits, labels)
    )
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, labels, 0.1), F.cross_entropy(logits, labels, label_smoothing=0.1)
    )


def test_find_label_column_errors_say_what_to_pass():
    import datasets

    labelled = datasets.Dataset.from_dict({"image": [None], "label": [0]})
    unlabelled = datasets.Dataset.from_dict({"image": [None]})
    assert find_label_column(labelled) == "label"
    with pytest.raises(ValueError, match="Label column 'target' not found"):
        find_label_column(labelled, "target")
    with pytest.raises(ValueError, match="has no labels"):
        find_label_column(unlabelled)


def test_labelled_splits_use_the_processor_saved_with_the_checkpoint(image_folder, tmp_path):
    from argparse import Namespace

    from modeling_gpa.data import build_image_processor
    from modeling_gpa.evaluation import load_labelled_splits

    build_image_processor(28, 1, mean=[0.5], std=[0.25]).save_pretrained(tmp_path)
    args = Namespace(
        dataset_name=None,
        dataset_config_name=None,
        train_dir=str(image_folder),
        validation_dir=None,
        train_val_split=0.25,
        cache_dir=None,
        seed=0,
        image_column_name=None,
        label_column_name=None,
        max_train_samples=5,
        max_eval_samples=None,
    )
    data = load_labelled_splits(args, image_size=16, num_channels=1, processor_path=str(tmp_path))
    assert tuple(data["processor"].image_mean) == (0.5,) and data["num_classes"] == 2
    assert len(data["train"]) == 5 and len(data["eval"]) == 3
    example = data["eval"][0]
    assert example["pixel_values"].shape == (1, 16, 16) and example["labels"] in (0, 1)
    assert example["pixel_values"].dtype == torch.uint8
    pixels = data["normalizer"](example["pixel_values"][None])
    torch.testing.assert_close(pixels, (example["pixel_values"][None].float() / 255 - 0.5) / 0.25)
