"""MAE's linear probe: a BatchNorm-then-linear head on frozen features, trained with LARS or SGD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .features import check_features, check_labels
from .metric_loading import load_metric
from .recipes import LARS, cosine_lr

OPTIMIZERS = ("lars", "sgd")
# MAE's linear probe: LARS at blr 0.1 and batch 16384, i.e. lr 6.4. LARS rescales each update to a fixed share of the
# weight norm, so this rate (not blr * batch / 256) is what carries over to smaller batches.
MAE_LARS_LR = 0.1 * 16384 / 256


class LinearProbe(nn.Module):
    """MAE's linear-probe head: ``BatchNorm1d(affine=False, eps=1e-6)`` then ``Linear`` (weights N(0, 0.01), bias 0).

    The parameter-free BatchNorm only whitens the frozen features; the classifier stays linear.
    """

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6)
        self.linear = nn.Linear(feature_dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_classes) logits."""
        return self.linear(self.norm(features))


def train_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 90,
    batch_size: int = 256,
    blr: float = 0.1,
    lr: float | None = None,
    optimizer: str = "lars",
    weight_decay: float = 0.0,
    warmup_epochs: int = 10,
    seed: int = 0,
    device: str = "cpu",
) -> LinearProbe:
    """Fits a :class:`LinearProbe` on precomputed (N, D) features with (N,) labels.

    ``lr = blr * batch_size / 256`` (MAE's scaling) unless ``lr`` is given; cosine schedule with warm-up, per-step
    updates, cross-entropy. ``optimizer``: ``"lars"`` (MAE's) or ``"sgd"`` (momentum 0.9).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is invalid; allowed values: {', '.join(map(repr, OPTIMIZERS))}.")
    if features.dim() != 2 or features.shape[0] != labels.shape[0] or features.shape[0] == 0:
        raise ValueError(
            f"train_linear_probe needs (N, D) features and (N,) labels with N > 0; got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}."
        )
    check_labels(labels, num_classes)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = LinearProbe(features.shape[1], num_classes).to(device)
    lr = blr * batch_size / 256 if lr is None else lr
    if optimizer == "lars":
        optim = LARS(probe.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        optim = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    features, labels = features.float().to(device), labels.long().to(device)
    batch_size = min(batch_size, features.shape[0])
    steps_per_epoch = max(1, features.shape[0] // batch_size)
    total_steps, warmup_steps = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    probe.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator).to(device)
        for index in order[: steps_per_epoch * batch_size].view(steps_per_epoch, batch_size):
            for group in optim.param_groups:
                group["lr"] = cosine_lr(step, total_steps, warmup_steps, lr)
            loss = F.cross_entropy(probe(features[index]), labels[index])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            step += 1
    return probe.eval()


@torch.no_grad()
def probe_logits(probe: LinearProbe, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """(N, D) features -> (N, num_classes) CPU logits of a trained probe."""
    in_features = probe.linear.in_features
    if features.dim() != 2 or features.shape[1] != in_features:
        raise ValueError(
            f"Feature dimension mismatch: the probe takes (N, {in_features}) features, got {tuple(features.shape)}; "
            "extract features with the encoder and pooling the probe was trained on."
        )
    device = probe.linear.weight.device
    return torch.cat([probe(chunk.float().to(device)).cpu() for chunk in features.split(batch_size)])


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    eval_features: torch.Tensor,
    eval_labels: torch.Tensor,
    num_classes: int,
    **probe_kwargs,
) -> dict[str, float]:
    """Trains a probe (``probe_kwargs`` go to :func:`train_linear_probe`) and returns its eval accuracy."""
    check_features(train_features, eval_features)
    probe = train_linear_probe(train_features, train_labels, num_classes, **probe_kwargs)
    predictions = probe_logits(probe, eval_features).argmax(dim=1)
    return load_metric("accuracy").compute(predictions=predictions.numpy(), references=eval_labels.numpy())
