"""Hard Patches Mining (HPM, CVPR 2023): the loss-prediction objective and the EMA momentum schedule, as tensors.

Adapted from Haochen-Wang409/HPM (``models_mae_learn_loss.py``: ``forward_learning_loss``; ``engine_pretrain.py``:
the EMA decay). The predictor is a decoder branch of the model (``modeling_gpa.HPMLossPredictor``); an EMA copy of
the whole model predicts the losses of the full image, and Eq. 6's hard share (``masking.mask_groups``) masks the
patches it ranks highest, the rest at random. Where HPM's code and paper differ, this follows the code
(docs/model.md lists the points).
"""

from __future__ import annotations

import torch

EPS = 1e-6


def relative_loss_prediction_loss(predicted: torch.Tensor, losses: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """HPM's relative objective: does the predictor order the masked patches of each image as their losses?

    Args:
        predicted: (B, n) predicted losses.
        losses: (B, n) per-patch reconstruction losses (detached here).
        masked: (B, n) 1 for masked patches; only pairs of two masked patches of one image count.

    Returns:
        Scalar: over the pairs (i, j) with ``l_i != l_j``, the mean binary cross-entropy of ``sigmoid(p_i - p_j)``
        against ``1[l_i > l_j]`` (both orders of a pair count, as in HPM's code, with its ``1e-6`` in the logs).
        O(B n^2): n is the patch count, a few hundred at most.
    """
    losses = losses.detach().float()
    predicted = predicted.float()
    pair = (masked.unsqueeze(2) * masked.unsqueeze(1)).bool()
    higher = (losses.unsqueeze(2) > losses.unsqueeze(1)) & pair
    lower = (losses.unsqueeze(2) < losses.unsqueeze(1)) & pair
    probability = torch.sigmoid(predicted.unsqueeze(2) - predicted.unsqueeze(1))
    terms = -(higher * torch.log(probability + EPS) + lower * torch.log(1.0 - probability + EPS))
    return terms.sum() / (higher | lower).sum().clamp_min(1)


def standardized_loss_prediction_loss(
    predicted: torch.Tensor, losses: torch.Tensor, masked: torch.Tensor
) -> torch.Tensor:
    """HPM's absolute objective: MSE of the predictions to each image's losses standardised over its masked patches.

    Shapes as [`relative_loss_prediction_loss`]; the standardisation uses the unbiased variance and ``+1e-6`` inside
    the root, as HPM's code.
    """
    losses = losses.detach().float()
    weights = masked.float()
    count = weights.sum(dim=1, keepdim=True)
    mean = (losses * weights).sum(dim=1, keepdim=True) / count.clamp_min(1)
    variance = ((losses - mean) ** 2 * weights).sum(dim=1, keepdim=True) / (count - 1).clamp_min(1)
    target = (losses - mean) / (variance + EPS).sqrt()
    return ((predicted.float() - target) ** 2 * weights).sum() / weights.sum().clamp_min(1)


def hpm_momentum(epoch: float, start: float = 0.999, end: float = 0.9999, ramp_epochs: int = 100) -> float:
    """EMA momentum in ``epoch`` (completed epochs; fractions are floored as HPM counts whole epochs): linear from
    ``start`` to ``end`` over the first ``ramp_epochs`` epochs, then ``end``."""
    whole = int(epoch + 1e-6)
    if whole >= ramp_epochs:
        return end
    return start + whole / ramp_epochs * (end - start)


__all__ = ["hpm_momentum", "relative_loss_prediction_loss", "standardized_loss_prediction_loss"]
