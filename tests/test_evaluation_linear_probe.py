"""MAE's linear probe: cached features, fresh crops every epoch, timm's LARS as MAE's, top-1 / top-5."""

import numpy as np
import pytest
import torch
from tiny import tiny_kwargs
from transformers import ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.data import arrays_to_dataset, with_pixel_values
from modeling_gpa.data.pipeline import PixelNormalizer, TrainCrop
from modeling_gpa.evaluation import (
    MAE_LINEAR_PROBE,
    LinearProbe,
    augmented_feature_batches,
    probe_logits,
    probe_optimizer,
    top1_top5,
    train_augmented_linear_probe,
    train_linear_probe,
)


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


def test_mae_linear_probe_defaults():
    """main_linprobe.py and FINETUNE.md: 90 epochs, 10 warm-up, batch 512 x 32 GPUs, blr 0.1, wd 0, LARS."""
    assert MAE_LINEAR_PROBE == {
        "epochs": 90,
        "warmup_epochs": 10,
        "batch_size": 16384,
        "blr": 0.1,
        "weight_decay": 0.0,
        "min_lr": 0.0,
        "optimizer": "lars",
        "crop_scale": (0.08, 1.0),
        "head_init_std": 0.01,
    }
    torch.manual_seed(0)
    weight = LinearProbe(768, 1000).linear.weight
    assert weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_lars_step_is_maes_at_its_weight_decay():
    """MAE's util/lars.py at weight decay 0: matrices move by lr * trust * grad with trust = 0.001 ||w|| / ||grad||;
    biases (1-D) by lr * grad, no trust ratio."""
    probe = LinearProbe(2, 1)
    with torch.no_grad():
        probe.linear.weight.copy_(torch.tensor([[3.0, 4.0]]))
        probe.linear.bias.fill_(1.0)
    optimizer = probe_optimizer(probe, "lars", lr=0.5, weight_decay=0.0)
    probe.linear.weight.grad, probe.linear.bias.grad = torch.tensor([[1.0, 0.0]]), torch.tensor([2.0])
    optimizer.step()
    trust = 0.001 * 5.0 / 1.0
    torch.testing.assert_close(probe.linear.weight.detach(), torch.tensor([[3.0 - 0.5 * trust, 4.0]]))
    torch.testing.assert_close(probe.linear.bias.detach(), torch.tensor([0.0]))


def test_top1_top5_of_logits():
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0], [0.0, 0, 0, 0, 1, 0]])
    labels = torch.tensor([5, 5, 0])
    # Row 0: right. Row 1: the true class is the worst (outside the top 5). Row 2: second best.
    assert top1_top5(logits, labels) == pytest.approx({"top1_accuracy": 1 / 3, "top5_accuracy": 2 / 3})


@pytest.fixture(scope="module")
def encoder_and_images(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpa")
    GPAForPreTraining(GPAConfig(**tiny_kwargs())).save_pretrained(path)
    encoder = ViTModel.from_pretrained(path, add_pooling_layer=False).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 28, 28)).astype(np.uint8)
    dataset = arrays_to_dataset({"image": images, "label": np.arange(12) % 3}, ["a", "b", "c"])
    crop = TrainCrop(28, 1, scale=MAE_LINEAR_PROBE["crop_scale"])
    return encoder, with_pixel_values(dataset, crop, "image", "label")


def test_augmented_probe_draws_new_crops_every_epoch(encoder_and_images):
    encoder, dataset = encoder_and_images
    generator = torch.Generator().manual_seed(0)
    normalizer = PixelNormalizer((0.5,), (0.25,))
    torch.manual_seed(0)
    epochs = [
        list(
            augmented_feature_batches(
                encoder,
                dataset,
                batch_size=12,
                feature_batch_size=5,
                pooling="cls",
                generator=generator,
                normalizer=normalizer,
            )
        )
        for _ in range(2)
    ]
    (first, first_labels), (second, second_labels) = epochs[0][0], epochs[1][0]
    # One step of the whole batch per epoch, gathered from chunks of 5, 5 and 2 images.
    assert first.shape == second.shape == (12, 32) and len(epochs[0]) == 1
    assert sorted(first_labels.tolist()) == sorted(second_labels.tolist()) == sorted((np.arange(12) % 3).tolist())
    # Same images, new order and new crops: no feature vector of epoch 1 is one of epoch 0's.
    assert torch.cdist(first, second).min() > 1e-4
    probe = train_augmented_linear_probe(
        encoder,
        dataset,
        3,
        epochs=2,
        batch_size=6,
        feature_batch_size=4,
        lr=0.1,
        warmup_epochs=1,
        normalizer=normalizer,
    )
    assert isinstance(probe, LinearProbe) and not probe.training
