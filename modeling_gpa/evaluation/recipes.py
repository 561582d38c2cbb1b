"""The pieces of MAE's training recipes that timm provides: LARS, the cosine schedule, Mixup/CutMix, label smoothing.

They are written out here because the registry's torchvision, and with it timm, cannot be imported beside the CPU
build of torch this project's set-up installs. Mixup/CutMix and label smoothing follow timm's formulas
(``timm/data/mixup.py``, ``timm/loss/cross_entropy.py``); LARS is MAE's ``util/lars.py``, whose trust ratio divides by
``||grad + wd * w||`` where timm's divides by ``||grad|| + wd * ||w||`` (the two agree without weight decay).
``tests/test_evaluation_recipes.py`` checks each against those formulas for fixed draws and hand-made steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


class LARS(torch.optim.Optimizer):
    """MAE's LARS (``util/lars.py``): SGD with momentum whose update of each matrix is rescaled to
    ``trust_coefficient * ||p|| / ||grad + wd * p||``; biases and norm parameters (1-D) are neither decayed nor scaled.
    """

    def __init__(
        self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, trust_coefficient=1e-3
    ):
        super().__init__(
            params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        )

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                update = param.grad
                if update is None:
                    continue
                if param.ndim > 1:
                    update = update.add(param, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(param), torch.norm(update)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0, group["trust_coefficient"] * param_norm / update_norm, one),
                        one,
                    )
                    update = update.mul(trust)
                state = self.state[param]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(param)
                state["mu"].mul_(group["momentum"]).add_(update)
                param.add_(state["mu"], alpha=-group["lr"])
        return loss


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then a half-cycle cosine to ``min_lr`` (MAE's schedule)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class MixupCutmixCollator:
    """Wraps a collator of ``{"pixel_values", "labels"}`` batches with timm-style mixup / CutMix and label smoothing.

    Per batch, with probability ``prob``: CutMix with probability ``switch_prob`` when both alphas are positive (else
    whichever is), mixing each image with the batch reversed. Labels become (B, num_classes) soft targets. uint8
    pixels stay uint8.
    """

    def __init__(
        self,
        collate: Callable[[list], dict],
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        label_smoothing: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        seed: int = 0,
    ):
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"mixup={mixup_alpha}, cutmix={cutmix_alpha}, label_smoothing={label_smoothing} are invalid; "
                "allowed values: alphas >= 0, label smoothing in [0, 1)."
            )
        self.collate, self.num_classes = collate, num_classes
        self.mixup_alpha, self.cutmix_alpha, self.label_smoothing = mixup_alpha, cutmix_alpha, label_smoothing
        self.prob, self.switch_prob = prob, switch_prob
        self.rng = np.random.default_rng(seed)

    def soft_targets(self, labels: torch.Tensor, lam: float) -> torch.Tensor:
        """(B,) class ids -> (B, num_classes) smoothed one-hot targets mixed with the reversed batch's."""
        off = self.label_smoothing / self.num_classes
        one_hot = torch.full((labels.shape[0], self.num_classes), off)
        one_hot.scatter_(1, labels.long().unsqueeze(1), 1.0 - self.label_smoothing + off)
        return lam * one_hot + (1.0 - lam) * one_hot.flip(0)

    def _cutmix(self, pixel_values: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        height, width = pixel_values.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(self.rng.integers(height)), int(self.rng.integers(width))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        mixed = pixel_values.clone()
        mixed[..., top:bottom, left:right] = pixel_values.flip(0)[..., top:bottom, left:right]
        # The box is clipped at the border: the label weight follows the area actually pasted.
        return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)

    def __call__(self, examples: list) -> dict:
        batch = self.collate(examples)
        pixel_values, labels = batch["pixel_values"], torch.as_tensor(batch["labels"])
        lam = 1.0
        use_mix = (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.rng.random() < self.prob
        if use_mix:
            use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self.rng.random() < self.switch_prob)
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            lam = float(self.rng.beta(alpha, alpha))
            if use_cutmix:
                pixel_values, lam = self._cutmix(pixel_values, lam)
            else:
                mixed = lam * pixel_values + (1.0 - lam) * pixel_values.flip(0)
                # uint8 batches stay uint8 (normalised later on the device): rounding moves a pixel by < 0.5 / 255.
                is_uint8 = pixel_values.dtype == torch.uint8
                pixel_values = mixed.round().clamp_(0, 255).to(torch.uint8) if is_uint8 else mixed
        return {**batch, "pixel_values": pixel_values, "labels": self.soft_targets(labels, lam)}


def soft_target_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy for (B, C) logits and either (B,) class ids (with ``label_smoothing``) or (B, C) soft targets."""
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets.long(), label_smoothing=label_smoothing)
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
