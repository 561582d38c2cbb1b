"""Downstream evaluation of a pretrained encoder: features, k-NN, linear probe, LARS, layer-wise lr decay, mixup.

Every checkpoint this project or Hugging Face produces (GPA, ViTMAE, ViT) loads as a ``ViTModel`` encoder, so one
code path evaluates all of them. Metrics are the offline ``evaluate`` modules in ``modeling_gpa/metrics``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTModel
from transformers.utils import logging as transformers_logging

from . import metric_functions
from .pipeline import PixelNormalizer, collate_pixel_values_and_labels

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
POOLINGS = ("cls", "mean")
OPTIMIZERS = ("lars", "sgd")
# MAE's linear probe: LARS at blr 0.1 and batch 16384, i.e. lr 6.4. LARS rescales each update to a fixed share of the
# weight norm, so this rate (not blr * batch / 256) is what carries over to smaller batches.
MAE_LARS_LR = 0.1 * 16384 / 256

logger = logging.getLogger(__name__)


def load_metric(name: str):
    """One of this package's metric modules (``accuracy``, ``top_k_accuracy``, ``object_recall``), offline.

    Where `evaluate` is not installed (the GPU machines benchmarks run on), returns an object whose ``compute`` calls
    the same function of `metric_functions` that the module's ``_compute`` calls.
    """
    path = METRICS_DIR / name / f"{name}.py"
    if not path.is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"Unknown metric {name!r}; allowed values: {', '.join(available)}.")
    try:
        import evaluate
    except ImportError:
        return ArrayMetric(getattr(metric_functions, name))
    return evaluate.load(str(path))


class ArrayMetric:
    """``compute(predictions=..., references=..., **kwargs)`` as an `evaluate` module's, without `evaluate`."""

    def __init__(self, function: Callable[..., dict]):
        self.function = function

    def compute(self, *, predictions, references, **kwargs) -> dict:
        return self.function(predictions, references, **kwargs)


def load_vit(model_class: type, name_or_path: str, encoder_prefix: str = "", **kwargs):
    """``model_class.from_pretrained`` of a GPA, ViTMAE or ViT checkpoint, refusing one without ViT encoder weights.

    ``encoder_prefix`` is where the encoder sits in ``model_class`` (``""`` for ``ViTModel``, ``"vit."`` for
    ``ViTForImageClassification``). Raises a one-line ``ValueError`` when loading fails or when any encoder weight
    is missing (it would silently stay random).
    """
    # Transformers' load report tabulates every decoder weight a pretraining checkpoint carries; the checks below say
    # what matters in one line instead.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Cannot load a ViT encoder from {name_or_path!r} ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "pass --model_name_or_path a directory saved by run_pretrain.py, ViTMAEForPreTraining or ViTModel."
        ) from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    encoder_keys = (f"{encoder_prefix}embeddings.", f"{encoder_prefix}layers.")
    missing = sorted(info["missing_keys"])
    missing_encoder = [key for key in missing if key.startswith(encoder_keys)]
    if missing_encoder:
        raise ValueError(
            f"{name_or_path!r} has no ViT encoder weights ({len(missing_encoder)} missing, e.g. "
            f"{missing_encoder[0]!r}); pass --model_name_or_path a GPA, ViTMAE or ViT checkpoint."
        )
    if missing:
        logger.warning("Newly initialised (train them before use): %s.", ", ".join(missing))
    logger.info(
        "Loaded %s from %s; %d checkpoint weights it has no use for were left out.",
        type(model).__name__,
        name_or_path,
        len(info["unexpected_keys"]),
    )
    return model


def load_encoder(name_or_path: str) -> ViTModel:
    """The ViT encoder of a GPA, ViTMAE or ViT checkpoint directory (or Hub id), in eval mode."""
    return load_vit(ViTModel, name_or_path, add_pooling_layer=False).eval()


def pool(last_hidden_state: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, 1+n, D) encoder output -> (B, D): the CLS token or the mean of the patch tokens."""
    if pooling == "cls":
        return last_hidden_state[:, 0]
    if pooling == "mean":
        return last_hidden_state[:, 1:].mean(dim=1)
    raise ValueError(f"pooling={pooling!r} is invalid; allowed values: {', '.join(map(repr, POOLINGS))}.")


@torch.no_grad()
def encode(
    encoder: ViTModel, pixel_values: torch.Tensor, pooling: str = "cls", batch_size: int = 256, device: str = "cpu"
) -> torch.Tensor:
    """(N, C, H, W) images -> (N, D) float32 CPU features of the frozen ``encoder``."""
    encoder.eval().to(device)
    chunks = [
        pool(encoder(chunk.to(device)).last_hidden_state, pooling).float().cpu()
        for chunk in pixel_values.split(batch_size)
    ]
    return torch.cat(chunks)


@torch.no_grad()
def extract_features(
    encoder: ViTModel,
    batches: Iterable[dict],
    pooling: str = "cls",
    device: str = "cpu",
    normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches of ``{"pixel_values": (B, C, H, W), "labels": (B,)}`` -> (N, D) float32 features, (N,) int64 labels.

    uint8 pixels (the input pipeline's) are normalised on ``device`` by ``normalizer`` (a `PixelNormalizer`); float
    pixels are taken as already normalised.
    """
    encoder.eval().to(device)
    features, labels = [], []
    for batch in batches:
        pixel_values = batch["pixel_values"].to(device, non_blocking=True)
        if pixel_values.dtype == torch.uint8:
            if normalizer is None:
                raise ValueError("uint8 pixel_values need a normalizer: pass the checkpoint's PixelNormalizer")
            pixel_values = normalizer(pixel_values)
        hidden = encoder(pixel_values).last_hidden_state
        features.append(pool(hidden, pooling).float().cpu())
        labels.append(torch.as_tensor(batch["labels"]).long())
    if not features:
        raise ValueError("No images to extract features from: the evaluation split is empty.")
    return torch.cat(features), torch.cat(labels)


def check_features(train_features: torch.Tensor, query_features: torch.Tensor) -> None:
    """Raises ``ValueError`` unless both are (N, D) with the same D."""
    if train_features.dim() != 2 or query_features.dim() != 2 or train_features.shape[1] != query_features.shape[1]:
        raise ValueError(
            f"Feature dimension mismatch: train features {tuple(train_features.shape)} vs query features "
            f"{tuple(query_features.shape)}; extract both with the same encoder and pooling."
        )


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Raises ``ValueError`` unless every label is a class id in ``[0, num_classes)``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"Labels must be class ids in [0, {num_classes}); got values in [{int(labels.min())}, "
            f"{int(labels.max())}]. Pass --label_column_name a column of integer class ids."
        )


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> torch.Tensor:
    """DINO's weighted k-NN: (N, D) bank, (N,) labels, (Q, D) queries -> (Q, num_classes) vote sums.

    Features are L2-normalised; each of a query's ``k`` most cosine-similar bank entries votes ``exp(sim / T)``
    for its class. One matmul per query batch, no per-image loop.
    """
    check_features(train_features, query_features)
    check_labels(train_labels, num_classes)
    k = min(k, train_features.shape[0])
    bank = F.normalize(train_features.float(), dim=1)
    bank_labels = train_labels.long().to(bank.device)
    scores = []
    for queries in query_features.float().split(batch_size):
        similarity = F.normalize(queries.to(bank.device), dim=1) @ bank.T
        top_similarity, top_index = similarity.topk(k, dim=1)
        votes = torch.zeros(queries.shape[0], num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[top_index], (top_similarity / temperature).exp())
        scores.append(votes.cpu())
    return torch.cat(scores)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Top-1 and top-5 (capped at ``num_classes``) accuracy of :func:`knn_scores` on labelled queries."""
    scores = knn_scores(train_features, train_labels, query_features, num_classes, k=k, temperature=temperature)
    ks = sorted({1, min(5, num_classes)})
    return load_metric("top_k_accuracy").compute(predictions=scores.numpy(), references=query_labels.numpy(), k=ks)


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


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then a half-cycle cosine to ``min_lr`` (MAE's schedule)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


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


def vit_layer_id(name: str, num_layers: int) -> int:
    """BEiT/MAE layer id of a ``ViTForImageClassification`` parameter: 0 for the embeddings (CLS, position and patch
    embeddings), ``i + 1`` for block ``i``, ``num_layers + 1`` for the final norm and the classifier."""
    if name.startswith(("vit.embeddings", "embeddings")):
        return 0
    match = re.search(r"(?:^|\.)layers?\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def param_groups_layer_decay(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    no_weight_decay: Iterable[str] = ("cls_token", "position_embeddings"),
) -> list[dict]:
    """Optimizer groups with ``lr * layer_decay ** (num_layers + 1 - layer_id)`` per block (MAE/BEiT fine-tuning).

    Biases, norm weights (1-D) and the names in ``no_weight_decay`` get no weight decay. Each group carries its
    ``lr`` (schedulers such as HF Trainer's scale each group's initial lr) and its ``lr_scale``.
    """
    num_layers = model.config.num_hidden_layers
    skip = tuple(no_weight_decay)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1 and not any(token in name for token in skip)
        layer_id = vit_layer_id(name, num_layers)
        scale = layer_decay ** (num_layers + 1 - layer_id)
        group = groups.setdefault(
            (layer_id, decay),
            {"params": [], "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0},
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


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


def write_results(results: dict, output_dir: str | os.PathLike) -> Path:
    """Writes ``results`` as ``<output_dir>/results.json`` and returns the path."""
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def add_dataset_arguments(parser) -> None:
    """The dataset flags of run_pretrain.py / run_mae.py, plus ``--label_column_name``."""
    group = parser.add_argument_group("dataset")
    group.add_argument("--dataset_name", default=None, help="fashion_mnist, cluttered_fashion_mnist or a Hub dataset.")
    group.add_argument("--dataset_config_name", default=None)
    group.add_argument("--train_dir", default=None, help="Image folder (class subfolders give the labels).")
    group.add_argument("--validation_dir", default=None)
    group.add_argument("--train_val_split", type=float, default=0.15)
    group.add_argument("--image_column_name", default=None)
    group.add_argument("--label_column_name", default=None, help="Defaults to 'label' or 'labels'.")
    group.add_argument("--max_train_samples", type=int, default=None)
    group.add_argument("--max_eval_samples", type=int, default=None)
    group.add_argument("--cache_dir", default=None)


def find_label_column(dataset, label_column_name: str | None = None) -> str:
    """The label column: ``label_column_name`` if given, else ``label`` or ``labels``; a one-line error otherwise."""
    columns = dataset.column_names
    if label_column_name is not None:
        if label_column_name not in columns:
            raise ValueError(
                f"Label column {label_column_name!r} not found; --label_column_name must be one of {columns}."
            )
        return label_column_name
    for name in ("label", "labels"):
        if name in columns:
            return name
    raise ValueError(
        f"The dataset has no labels (columns: {columns}); evaluation needs class labels: pass --label_column_name, "
        "or a --train_dir with one subfolder per class."
    )


def class_names(dataset, column: str) -> list[str] | None:
    """Names of a ``ClassLabel`` column, else ``None``."""
    names = getattr(dataset.features[column], "names", None)
    return list(names) if names else None


def load_labelled_splits(args, image_size: int, num_channels: int, processor_path: str | None = None) -> dict:
    """Train and eval splits as ``{"pixel_values" (uint8), "labels"}`` datasets with the deterministic eval crop.

    The eval split is "validation" (Fashion-MNIST's test set). Mean/std come from the image processor saved with
    the checkpoint at ``processor_path`` when there is one, else from ``build_image_processor``'s defaults.

    Returns:
        dict with ``train`` and ``eval`` datasets, ``num_classes``, ``id2label`` and the raw ``splits`` (for
        training-time transforms), ``image_column``, ``label_column``, the ``processor`` and its ``normalizer``
        (the `PixelNormalizer` that turns the uint8 batches into model inputs on the device).
    """
    from .data import build_image_processor, load_image_datasets, transforms_from_processor, with_pixel_values

    splits, image_column = load_image_datasets(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_dir=args.train_dir,
        validation_dir=args.validation_dir,
        train_val_split=args.train_val_split,
        cache_dir=args.cache_dir,
        seed=args.seed,
        image_column_name=args.image_column_name,
    )
    label_column = find_label_column(splits["train"], args.label_column_name)
    find_label_column(splits["validation"], label_column)
    for split, limit in (("train", args.max_train_samples), ("validation", args.max_eval_samples)):
        if limit is not None:
            splits[split] = splits[split].shuffle(seed=args.seed).select(range(min(limit, len(splits[split]))))
    names = class_names(splits["train"], label_column)
    if names is None:
        labels = [*splits["train"][label_column], *splits["validation"][label_column]]
        if not all(isinstance(label, int | np.integer) for label in labels):
            raise ValueError(f"Label column {label_column!r} must hold integer class ids; pass --label_column_name.")
        names = [str(index) for index in range(max(labels) + 1)]
    processor = _saved_processor(processor_path) or build_image_processor(image_size, num_channels)
    processor.size = {"height": image_size, "width": image_size}
    crop = transforms_from_processor(processor, num_channels, train=False)
    return {
        "train": with_pixel_values(splits["train"], crop, image_column, label_column),
        "eval": with_pixel_values(splits["validation"], crop, image_column, label_column),
        "num_classes": len(names),
        "id2label": dict(enumerate(names)),
        "splits": splits,
        "image_column": image_column,
        "label_column": label_column,
        "processor": processor,
        "normalizer": PixelNormalizer(processor.image_mean, processor.image_std),
    }


def _saved_processor(path: str | None):
    """The image processor saved beside a checkpoint, or ``None`` when it has none."""
    if path is None or not os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        return None
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(path)


def labelled_features(
    encoder: ViTModel,
    dataset,
    pooling: str,
    batch_size: int,
    device: str,
    normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder (N, D) features and (N,) labels of a ``{"pixel_values", "labels"}`` dataset.

    ``normalizer`` turns uint8 pixels into model inputs on ``device`` (``load_labelled_splits(...)["normalizer"]``).
    """
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate_pixel_values_and_labels, pin_memory=device != "cpu"
    )
    return extract_features(encoder, loader, pooling=pooling, device=device, normalizer=normalizer)


def add_frozen_encoder_arguments(parser) -> None:
    """The flags run_knn.py and run_linear_probe.py share: checkpoint, output, pooling, device, seed and dataset."""
    parser.add_argument("--model_name_or_path", required=True, help="GPA, ViTMAE or ViT checkpoint directory.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--pooling", choices=POOLINGS, default="cls")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=42)
    add_dataset_arguments(parser)


def frozen_encoder_features(args) -> dict:
    """Features of the frozen encoder of ``args.model_name_or_path`` on the train and eval splits of ``args``.

    Returns:
        dict with ``train`` and ``eval`` as ((N, D) features, (N,) labels) pairs and ``num_classes``.
    """
    encoder = load_encoder(args.model_name_or_path)
    data = load_labelled_splits(args, encoder.config.image_size, encoder.config.num_channels, args.model_name_or_path)
    return {
        split: labelled_features(
            encoder, data[split], args.pooling, args.batch_size, args.device, normalizer=data["normalizer"]
        )
        for split in ("train", "eval")
    } | {"num_classes": data["num_classes"]}


__all__ = [
    "add_dataset_arguments",
    "add_frozen_encoder_arguments",
    "frozen_encoder_features",
    "class_names",
    "find_label_column",
    "labelled_features",
    "load_labelled_splits",
    "LARS",
    "MAE_LARS_LR",
    "LinearProbe",
    "MixupCutmixCollator",
    "check_features",
    "check_labels",
    "cosine_lr",
    "encode",
    "extract_features",
    "knn_accuracy",
    "knn_scores",
    "linear_probe_accuracy",
    "load_encoder",
    "load_vit",
    "load_metric",
    "param_groups_layer_decay",
    "pool",
    "probe_logits",
    "soft_target_cross_entropy",
    "train_linear_probe",
    "vit_layer_id",
    "write_results",
]
