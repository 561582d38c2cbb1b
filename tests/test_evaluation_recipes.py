"""LARS, the cosine schedule, Mixup/CutMix and label smoothing, against MAE's and timm's formulas."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling_gpa.evaluation import (
    LARS,
    MixupCutmixCollator,
    cosine_lr,
    soft_target_cross_entropy,
)


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


def test_cosine_lr_warms_up_then_decays_to_zero():
    assert cosine_lr(0, 100, 10, 1.0) == 0.0
    assert cosine_lr(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert cosine_lr(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 10, 1.0) == pytest.approx(0.0)


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


# timm cannot be imported beside the CPU build of torch this project installs, so its formulas are written out
# below, as they stand in timm/data/mixup.py (mixup_target, rand_bbox, cutmix_bbox_and_lam, Mixup._mix_batch),
# timm/loss/cross_entropy.py (LabelSmoothingCrossEntropy) and timm/optim/lars.py (Lars.step), as the reference.


def timm_mixup_target(target: torch.Tensor, num_classes: int, lam: float, smoothing: float) -> torch.Tensor:
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    y1 = torch.full((target.size(0), num_classes), off_value).scatter_(1, target.long().view(-1, 1), on_value)
    y2 = torch.full((target.size(0), num_classes), off_value).scatter_(1, target.flip(0).long().view(-1, 1), on_value)
    return y1 * lam + y2 * (1.0 - lam)


def timm_cutmix(x: torch.Tensor, lam: float, cy: int, cx: int) -> tuple[torch.Tensor, float]:
    """``rand_bbox`` with the centre given, ``correct_lam=True``, then the in-place paste of ``_mix_batch``."""
    img_h, img_w = x.shape[-2:]
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    yl, yh = np.clip(cy - cut_h // 2, 0, img_h), np.clip(cy + cut_h // 2, 0, img_h)
    xl, xh = np.clip(cx - cut_w // 2, 0, img_w), np.clip(cx + cut_w // 2, 0, img_w)
    lam = 1.0 - (yh - yl) * (xh - xl) / float(img_h * img_w)
    x = x.clone()
    x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
    return x, lam


def _random_batch(size: int = 6) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.rand(3, 16, 16, generator=generator), "labels": i % 4} for i in range(size)]


@pytest.mark.parametrize("seed", range(5))  # seeds 0, 2, 3 draw CutMix, 1 and 4 mixup
def test_mixup_and_cutmix_match_timm_for_the_same_draw(seed):
    examples = _random_batch()
    batch = MixupCutmixCollator(
        _collate, num_classes=4, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, seed=seed
    )(examples)
    # The same draws, in timm's order: apply with prob, switch to CutMix, lam ~ Beta(alpha, alpha), box centre.
    rng = np.random.default_rng(seed)
    assert rng.random() < 1.0
    use_cutmix = rng.random() < 0.5
    lam = float(rng.beta(1.0, 1.0) if use_cutmix else rng.beta(0.8, 0.8))
    plain = _collate(examples)
    if use_cutmix:
        cy, cx = int(rng.integers(16)), int(rng.integers(16))
        expected, lam = timm_cutmix(plain["pixel_values"], lam, cy, cx)
    else:
        expected = plain["pixel_values"].flip(0).mul_(1.0 - lam)
        expected = plain["pixel_values"].clone().mul_(lam).add_(expected)
    torch.testing.assert_close(batch["pixel_values"], expected)
    torch.testing.assert_close(batch["labels"], timm_mixup_target(plain["labels"], 4, lam, 0.1))


def test_label_smoothing_matches_timms_label_smoothing_cross_entropy():
    logits, target, smoothing = torch.randn(5, 7), torch.tensor([0, 3, 6, 2, 2]), 0.2
    logprobs = F.log_softmax(logits, dim=-1)
    nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1)).squeeze(1)
    timm_loss = ((1.0 - smoothing) * nll_loss + smoothing * -logprobs.mean(dim=-1)).mean()
    torch.testing.assert_close(soft_target_cross_entropy(logits, target, smoothing), timm_loss)
    # Smoothing in the collator's targets then the soft-target loss gives the same value (timm's mixup path).
    soft_targets = timm_mixup_target(target, 7, 1.0, smoothing)
    torch.testing.assert_close(soft_target_cross_entropy(logits, soft_targets), timm_loss)


def timm_lars_step(param, grad, buffer, lr, momentum, weight_decay, trust_coeff=0.001, eps=1e-8, always_adapt=False):
    """timm's ``Lars.step`` for one parameter (no dampening, Nesterov or trust clipping): (new param, buffer)."""
    grad = grad.clone()
    if weight_decay != 0 or always_adapt:
        w_norm, g_norm = param.norm(2.0), grad.norm(2.0)
        trust_ratio = trust_coeff * w_norm / (g_norm + w_norm * weight_decay + eps)
        trust_ratio = torch.where(w_norm > 0, torch.where(g_norm > 0, trust_ratio, 1.0), 1.0)
        grad.add_(param, alpha=weight_decay)
        grad.mul_(trust_ratio)
    buffer = grad.clone() if buffer is None else buffer.mul(momentum).add(grad)
    return param - lr * buffer, buffer


def test_lars_matches_timms_update_on_hand_made_steps_without_weight_decay():
    """Without weight decay the two trust ratios coincide (timm adapts every parameter only with ``always_adapt``).

    With weight decay they differ by design: MAE's (``util/lars.py``, which this project follows for MAE's linear
    probe) divides by ``||grad + wd * w||``, timm's by ``||grad|| + wd * ||w||``;
    test_lars_step_matches_maes_formula checks that case against MAE's formula.
    """
    weight = torch.nn.Parameter(torch.tensor([[3.0, -4.0], [1.0, 2.0]]))
    optimizer = LARS([weight], lr=0.5, weight_decay=0.0, momentum=0.9, trust_coefficient=0.01)
    reference, buffer = weight.detach().clone(), None
    for grad in (torch.tensor([[1.0, 0.5], [-2.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.3, -0.7]])):
        weight.grad = grad.clone()
        optimizer.step()
        reference, buffer = timm_lars_step(reference, grad, buffer, 0.5, 0.9, 0.0, 0.01, always_adapt=True)
        torch.testing.assert_close(weight.detach(), reference)
