"""MAE's linear probe: a BatchNorm-then-linear head on a frozen encoder, trained with LARS (timm's) or SGD.

MAE's protocol (``main_linprobe.py``) draws a RandomResizedCrop (scale 0.08-1, bicubic) and a flip of every training
image each epoch and passes it through the frozen encoder; [`train_augmented_linear_probe`] does that. Features
computed once on the evaluation crop ([`train_linear_probe`]) are the fast approximation (``--augment none``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from timm.optim import Lars
from timm.utils import accuracy as timm_accuracy
from torch import nn

from .features import check_features, check_labels, extract_features
from .metric_loading import load_metric
from .recipes import cosine_lr

OPTIMIZERS = ("lars", "sgd")
AUGMENTATIONS = ("rrc", "none")
# MAE's main_linprobe.py and FINETUNE.md: 90 epochs (10 of warm-up) of batch 16384 at blr 0.1, no weight decay, min lr
# 0; RandomResizedCrop(0.08-1, bicubic) + flip; the head's weights from trunc_normal(std=0.01).
MAE_LINEAR_PROBE = dict(
    epochs=90,
    warmup_epochs=10,
    batch_size=16384,
    blr=0.1,
    weight_decay=0.0,
    min_lr=0.0,
    optimizer="lars",
    crop_scale=(0.08, 1.0),
    head_init_std=0.01,
)
FeatureBatches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]


class LinearProbe(nn.Module):
    """MAE's linear-probe head: ``BatchNorm1d(affine=False, eps=1e-6)`` then ``Linear`` (weights trunc_normal with
    std 0.01, bias 0).

    The parameter-free BatchNorm only whitens the frozen features; the classifier stays linear.
    """

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6)
        self.linear = nn.Linear(feature_dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=MAE_LINEAR_PROBE["head_init_std"])
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_classes) logits."""
        return self.linear(self.norm(features))


def probe_optimizer(probe: LinearProbe, optimizer: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """timm's ``Lars`` as MAE's ``util/lars.py`` uses LARS (the trust ratio and weight decay on matrices only, biases
    plain SGD with momentum 0.9), or SGD with momentum 0.9 (the GPA release's ``main_linprobe.py`` swaps LARS for SGD
    and documents no batch or lr: the momentum, batch and lr are MAE's LARS values, ours).

    MAE's trust ratio divides by ``||grad + wd * w||``, timm's by ``||grad|| + wd * ||w||``: they agree at MAE's
    weight decay 0 (to timm's eps 1e-8).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is invalid; allowed values: {', '.join(map(repr, OPTIMIZERS))}.")
    if optimizer == "sgd":
        return torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    matrices = [param for param in probe.parameters() if param.ndim > 1]
    vectors = [param for param in probe.parameters() if param.ndim <= 1]
    groups = [
        {"params": matrices, "weight_decay": weight_decay, "always_adapt": True},
        {"params": vectors, "weight_decay": 0.0, "always_adapt": False},
    ]
    return Lars(groups, lr=lr, momentum=0.9)


def fit_linear_probe(
    probe: LinearProbe,
    batches: FeatureBatches,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    optimizer: str = "lars",
    weight_decay: float = 0.0,
    warmup_epochs: int = 10,
    min_lr: float = 0.0,
    device: str = "cpu",
) -> LinearProbe:
    """Trains ``probe`` on ``batches(epoch)``: ``steps_per_epoch`` ((B, D) features, (B,) labels) pairs per epoch.

    Per-step cosine schedule with linear warm-up (MAE's ``adjust_learning_rate``), cross-entropy.
    """
    probe = probe.to(device).train()
    optim = probe_optimizer(probe, optimizer, lr, weight_decay)
    total_steps, warmup_steps = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    step = 0
    for epoch in range(epochs):
        for features, labels in batches(epoch):
            for group in optim.param_groups:
                group["lr"] = cosine_lr(step, total_steps, warmup_steps, lr, min_lr)
            loss = F.cross_entropy(probe(features.float().to(device)), labels.long().to(device))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            step += 1
    return probe.eval()


def _check_training_inputs(optimizer: str, num_examples: int, num_labels: int) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is invalid; allowed values: {', '.join(map(repr, OPTIMIZERS))}.")
    if num_examples == 0 or num_examples != num_labels:
        raise ValueError(f"A linear probe needs N > 0 examples with N labels; got {num_examples} and {num_labels}.")


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
    min_lr: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
) -> LinearProbe:
    """Fits a :class:`LinearProbe` on precomputed (N, D) features with (N,) labels (no augmentation).

    ``lr = blr * batch_size / 256`` (MAE's scaling) unless ``lr`` is given; batches drawn without replacement,
    the last incomplete one dropped (MAE's ``drop_last``).
    """
    if features.dim() != 2:
        raise ValueError(f"train_linear_probe needs (N, D) features; got {tuple(features.shape)}.")
    _check_training_inputs(optimizer, features.shape[0], labels.shape[0])
    check_labels(labels, num_classes)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = LinearProbe(features.shape[1], num_classes)
    lr = blr * batch_size / 256 if lr is None else lr
    features, labels = features.float().to(device), labels.long().to(device)
    batch_size = min(batch_size, features.shape[0])
    steps_per_epoch = features.shape[0] // batch_size

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(features.shape[0], generator=generator).to(device)
        for index in order[: steps_per_epoch * batch_size].view(steps_per_epoch, batch_size):
            yield features[index], labels[index]

    return fit_linear_probe(
        probe,
        batches,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        min_lr=min_lr,
        device=device,
    )


def augmented_feature_batches(
    encoder: nn.Module,
    dataset,
    *,
    batch_size: int,
    feature_batch_size: int,
    pooling: str,
    generator: torch.Generator,
    normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_workers: int = 0,
    device: str = "cpu",
    unreadable: set[str] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of probe batches: ((batch_size, D) frozen features, (batch_size,) labels) of fresh random crops.

    ``dataset`` rows are ``{"pixel_values", "labels"}`` whose transform draws a new crop on every read (a
    `TrainCrop`). Each batch goes through the encoder ``feature_batch_size`` images at a time and its features are
    gathered before the step, so the probe (and its BatchNorm) sees the whole batch however little memory the
    encoder has. The order is a new permutation from ``generator``; the last incomplete batch is dropped. The names
    of unreadable images (each replaced by the next readable one) are added to ``unreadable`` when given.
    """
    from torch.utils.data import DataLoader

    from ..data.pipeline import collate_pixel_values_and_labels

    steps = len(dataset) // batch_size
    order = torch.randperm(len(dataset), generator=generator)[: steps * batch_size]
    chunks = [chunk.tolist() for step in order.view(steps, batch_size) for chunk in step.split(feature_batch_size)]
    chunks_per_step = -(-batch_size // feature_batch_size)
    loader = DataLoader(
        dataset,
        batch_sampler=chunks,
        collate_fn=collate_pixel_values_and_labels,
        num_workers=num_workers,
        pin_memory=device != "cpu",
    )
    loaded = iter(loader)
    for _ in range(steps):
        step_batches = (next(loaded) for _ in range(chunks_per_step))
        yield extract_features(
            encoder, step_batches, pooling=pooling, device=device, normalizer=normalizer, unreadable=unreadable
        )


def train_augmented_linear_probe(
    encoder: nn.Module,
    dataset,
    num_classes: int,
    *,
    pooling: str = "cls",
    epochs: int = 90,
    batch_size: int = 16384,
    feature_batch_size: int = 256,
    lr: float = 6.4,
    optimizer: str = "lars",
    weight_decay: float = 0.0,
    warmup_epochs: int = 10,
    min_lr: float = 0.0,
    normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_workers: int = 0,
    seed: int = 0,
    device: str = "cpu",
    unreadable: set[str] | None = None,
) -> LinearProbe:
    """MAE's linear probe: new crops of ``dataset`` through the frozen ``encoder`` every epoch
    ([`augmented_feature_batches`]), then the probe step on each batch; unreadable images' names go to
    ``unreadable``."""
    _check_training_inputs(optimizer, len(dataset), len(dataset))
    batch_size = min(batch_size, len(dataset))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    encoder.eval().requires_grad_(False)
    probe = LinearProbe(_feature_dim(encoder), num_classes)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for features, labels in augmented_feature_batches(
            encoder,
            dataset,
            batch_size=batch_size,
            feature_batch_size=feature_batch_size,
            pooling=pooling,
            generator=generator,
            normalizer=normalizer,
            num_workers=num_workers,
            device=device,
            unreadable=unreadable,
        ):
            check_labels(labels, num_classes)
            yield features, labels

    return fit_linear_probe(
        probe,
        batches,
        epochs=epochs,
        steps_per_epoch=len(dataset) // batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        min_lr=min_lr,
        device=device,
    )


def _feature_dim(encoder: nn.Module) -> int:
    """Width of a ViT's tokens, or of a Swin's last stage."""
    config = encoder.config
    if getattr(config, "model_type", None) == "swin":
        return int(config.embed_dim * 2 ** (len(config.depths) - 1))
    return config.hidden_size


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


def top1_top5(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``top1_accuracy`` and ``top5_accuracy`` (shares in [0, 1]) of (N, C) logits by timm's ``accuracy`` (MAE's
    evaluation); top-5 is top-C below five classes."""
    top1, top5 = timm_accuracy(logits.float(), labels.long(), topk=(1, 5))
    return {"top1_accuracy": float(top1) / 100.0, "top5_accuracy": float(top5) / 100.0}


def probe_metrics(probe: LinearProbe, eval_features: torch.Tensor, eval_labels: torch.Tensor) -> dict[str, float]:
    """``accuracy`` (the offline ``evaluate`` module), ``top1_accuracy`` and ``top5_accuracy`` of a trained probe."""
    logits = probe_logits(probe, eval_features)
    metrics = load_metric("accuracy").compute(predictions=logits.argmax(1).numpy(), references=eval_labels.numpy())
    return metrics | top1_top5(logits, eval_labels)


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    eval_features: torch.Tensor,
    eval_labels: torch.Tensor,
    num_classes: int,
    **probe_kwargs,
) -> dict[str, float]:
    """Trains a probe on cached features (``probe_kwargs`` go to :func:`train_linear_probe`); [`probe_metrics`]."""
    check_features(train_features, eval_features)
    probe = train_linear_probe(train_features, train_labels, num_classes, **probe_kwargs)
    return probe_metrics(probe, eval_features, eval_labels)
