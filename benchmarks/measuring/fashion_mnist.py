"""MAE vs GPA masking on plain and cluttered Fashion-MNIST: k-NN and linear-probe accuracy over seeds.

    python benchmarks/benchmark_fashion_mnist.py --work_dir outputs/fm_bench --workers 2   # default size, 2 cores
    python benchmarks/benchmark_fashion_mnist.py --work_dir outputs/fm_quick --quick   # < 5 minutes
    python benchmarks/benchmark_fashion_mnist.py --work_dir outputs/fm_gpu --device cuda --workers 6 --threads 2 \
        --datasets cluttered --epochs 80   # the schedule at which MAE's linear probe beats raw-pixel k-NN

Every arm pretrains the same ViT (same init per seed, same data order, flips, batch size, epochs, optimizer) with a
plain loop over ``GPAForPreTraining``; only the mask (and MAM) differ:

- ``mae``: uniformly random masking (``noise=torch.rand``), no MAM: MAE itself.
- ``gpa_pretrained_fewshot``: frozen teacher = the ``mae`` arm's checkpoint of the same seed (the paper's setting),
  block and head picked by few-shot selection on 10 training images (paper section 3.4); with MAM.
- ``gpa_pretrained_last``: the same teacher at the last block and last head (the paper's default); with MAM.
- ``gpa_self_mam`` / ``gpa_self``: the student itself as teacher, with and without Masked Attention Modeling.
- ``gpa_random_teacher``: control, a frozen randomly initialised teacher (the seed's initial weights); with MAM. It
  separates attention learned by a teacher from what any network's attention gives on raw pixels.

References per seed: the randomly initialised encoder (same features pipeline) and k-NN / linear probe on raw pixels.
Each (dataset, arm, seed) writes ``<work_dir>/runs-<settings hash>/<dataset>/<arm>/seed<k>/result.json`` (and its
checkpoint) and is skipped when that file exists, so an interrupted run resumes and parallel workers (one per dataset
and seed) can share a work dir. Within a run, the state after every epoch goes to ``pretrain_state.pt`` next to it, so
a killed 80-epoch run loses at most one epoch and goes on to the numbers it would have reached uninterrupted;
``--time_budget_minutes`` stops at the first epoch end past the budget, to go on with the same command later. The
summary goes to ``outputs/benchmarks/fashion_mnist.md`` and ``.json``; ``--output benchmarks/fashion_mnist`` writes
the committed one.

Needs torch, transformers, numpy and Pillow, plus scipy and scikit-image to generate the cluttered set (cached in
``<work_dir>/data``: copy that folder to skip generation); neither ``datasets`` nor ``evaluate`` (the metrics fall back
to ``modeling_gpa.evaluation.metric_functions``), so it runs from a plain checkout on a machine with only torch and
transformers.

The default size (20,000 images, 8 epochs, batch 128, 3 seeds, both datasets) is measured in
``benchmarks/fashion_mnist_default_cpu.md`` and ``benchmarks/fashion_mnist_default_h100.md``: each (dataset, seed)
takes about 45 minutes on one CPU core, so the whole benchmark takes about 2 h 15 min with ``--workers 2`` on two
cores, and under 6 minutes on one H100 with ``--device cuda --workers 6 --threads 2``. On cluttered data MAE's linear
probe ties raw-pixel k-NN at 40 epochs and beats it at 80 (``benchmarks/fashion_mnist_cluttered_schedule_cpu.md``,
written by ``benchmark_settings_report.py`` from this script's cache): ``--epochs 80`` is ten times the default compute.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import functools
import hashlib
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers
from PIL import Image

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.evaluation import (
    cosine_lr,
    encode,
    knn_scores,
    load_encoder,
    load_metric,
    probe_logits,
)
from modeling_gpa.evaluation import train_linear_probe as fit_linear_probe
from modeling_gpa.masking import num_masked_patches

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("plain", "cluttered")
ARMS = ("mae", "gpa_pretrained_fewshot", "gpa_pretrained_last", "gpa_self_mam", "gpa_self", "gpa_random_teacher")
REFERENCES = ("random_init", "raw_pixels")
ARM_DESCRIPTIONS = {
    "mae": "MAE: random masking",
    "gpa_pretrained_fewshot": "GPA, pretrained (MAE) teacher, few-shot block/head, MAM",
    "gpa_pretrained_last": "GPA, pretrained (MAE) teacher, last block/head, MAM",
    "gpa_self_mam": "GPA, self teacher, MAM",
    "gpa_self": "GPA, self teacher, no MAM",
    "gpa_random_teacher": "control: GPA, frozen random-init teacher, MAM",
    "random_init": "reference: random-init encoder (no pretraining)",
    "raw_pixels": "reference: raw pixels",
}
# The column of docs/model.md's settings table that each arm trains with. Every GPA arm keeps GPAConfig's defaults
# ("ours") for the Eq. 6 ratios, the MAM loss region and the MAM target; the arms differ only in teacher, block/head
# and MAM on/off, which their descriptions name.
ARM_SETTINGS = {
    "mae": "–",
    "gpa_pretrained_fewshot": "ours",
    "gpa_pretrained_last": "ours",
    "gpa_self_mam": "ours",
    "gpa_self": "ours",
    "gpa_random_teacher": "ours",
    "random_init": "–",
    "raw_pixels": "–",
}
SETTING_NOTE = (
    "*Setting*: the GPA settings table of docs/model.md; *ours* = soft 0.5 → 0 and hard 0 → 0.5 of the masked patches "
    "over training (the paper's Eq. 6), the MAM loss over the masked patches and its target z-scored with the "
    "population standard deviation; block and head as the arm's name says (not the released code's block 9, head 11, "
    "nor its soft 0.3, all-patch MAM loss and unbiased-variance target)."
)
FEWSHOT_IMAGES = 10
# Per run: the state after the last finished epoch, removed once result.json is written.
PRETRAIN_STATE = "pretrain_state.pt"
# A 7x7 grid on both datasets (see patch_size_for).
NUM_PATCHES = 49
CLUTTER_FIELDS = (
    "canvas_size",
    "garment_scale_min",
    "garment_scale_max",
    "background_strength",
    "background_blur",
    "cluttered_norm_pix_loss",
)


@dataclasses.dataclass
class Settings:
    """Everything that defines a run; results are cached under a hash of the fields that change them."""

    train_samples: int = 20000
    test_samples: int = 5000
    epochs: int = 8
    batch_size: int = 128
    blr: float = 5e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    mask_ratio: float = 0.75
    hidden_size: int = 96
    num_layers: int = 4
    num_heads: int = 4
    decoder_hidden_size: int = 64
    decoder_layers: int = 2
    canvas_size: int = 56
    garment_scale_min: float = 0.7
    garment_scale_max: float = 1.2
    background_strength: float = 0.2
    background_blur: float = 2.0
    cluttered_norm_pix_loss: bool = False
    probe_epochs: int = 50
    probe_batch_size: int = 256
    probe_optimizer: str = "lars"
    probe_lr: float = 6.4
    knn_k: int = 20
    knn_temperature: float = 0.07

    def for_dataset(self, dataset: str) -> dict:
        """The fields that change a run on ``dataset`` (the clutter knobs do nothing to plain Fashion-MNIST)."""
        fields = dataclasses.asdict(self)
        if dataset == "plain":
            for name in CLUTTER_FIELDS:
                fields.pop(name)
        return fields

    def key(self, dataset: str) -> str:
        """Hash of those fields: a changed setting never reuses another setting's cached results."""
        return hashlib.sha256(json.dumps(self.for_dataset(dataset), sort_keys=True).encode()).hexdigest()[:10]


QUICK = dict(
    train_samples=1000,
    test_samples=500,
    epochs=2,
    batch_size=128,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    decoder_hidden_size=32,
    decoder_layers=1,
    # LARS moves each weight by a small share of its norm per step: a few hundred steps are the least that trains it.
    probe_epochs=40,
    probe_batch_size=128,
)


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def load_arrays(dataset: str, settings: Settings, work_dir: Path) -> dict[str, torch.Tensor]:
    """Normalised images, labels and pixel object masks of one dataset, cached under ``work_dir/data``.

    Returns:
        ``train_x`` (N, 1, S, S) float32, ``train_y`` (N,) int64, ``train_mask`` (N, S, S) bool, and the same for
        ``test_*``; S = 28 (plain) or ``canvas_size`` (cluttered). Garment pixels (> 0) are the plain object masks.
        ``pixel_mean`` and ``pixel_std``: the training images' statistics on the [0, 1] scale, which normalised them
        (absent from caches written before they were kept).
    """
    fields = ["train_samples", "test_samples", *(CLUTTER_FIELDS if dataset == "cluttered" else ())]
    key = hashlib.sha256(json.dumps({f: getattr(settings, f) for f in fields} | {"d": dataset}).encode()).hexdigest()
    path = work_dir / "data" / f"{dataset}-{key[:10]}.pt"
    if path.is_file():
        return torch.load(path)
    from modeling_gpa.data.cluttered import make_cluttered
    from modeling_gpa.data.fashion_mnist import garment_arrays

    clutter = None
    if dataset == "cluttered":
        clutter = functools.partial(
            make_cluttered,
            canvas_size=settings.canvas_size,
            scale_range=(settings.garment_scale_min, settings.garment_scale_max),
            background_strength=settings.background_strength,
            background_blur=settings.background_blur,
        )
    arrays = garment_arrays(settings.train_samples, settings.test_samples, clutter)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(arrays, path)
    return arrays


def save_atomically(value: object, path: Path) -> None:
    """``torch.save`` through a staging file: a process killed mid-write leaves the previous file (or none)."""
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(value, staging)
    os.replace(staging, path)


def patch_size_for(dataset: str, settings: Settings) -> int:
    """4-pixel patches on 28x28 Fashion-MNIST, a 7x7 grid on the cluttered canvas too: 49 patches either way."""
    return 4 if dataset == "plain" else settings.canvas_size // 7


# ----------------------------------------------------------------------------------------------------------------------
# Pretraining
# ----------------------------------------------------------------------------------------------------------------------


def model_config(dataset: str, settings: Settings, **gpa_fields) -> GPAConfig:
    """The one ViT every arm of ``dataset`` trains; ``gpa_fields`` set the teacher, block/head and MAM."""
    image_size = 28 if dataset == "plain" else settings.canvas_size
    return GPAConfig(
        image_size=image_size,
        patch_size=patch_size_for(dataset, settings),
        num_channels=1,
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        intermediate_size=4 * settings.hidden_size,
        decoder_hidden_size=settings.decoder_hidden_size,
        decoder_num_hidden_layers=settings.decoder_layers,
        decoder_num_attention_heads=settings.num_heads,
        decoder_intermediate_size=4 * settings.decoder_hidden_size,
        mask_ratio=settings.mask_ratio,
        # MAE's per-patch normalised target amplifies the faint background texture into a dominant loss term; on the
        # cluttered canvas the raw-pixel target keeps the garment's patches the ones that matter (see the sweep table).
        norm_pix_loss=dataset == "plain" or settings.cluttered_norm_pix_loss,
        **gpa_fields,
    )


def initial_model(dataset: str, settings: Settings, seed: int, **gpa_fields) -> GPAForPreTraining:
    """The model with the seed's initial weights: encoder and pixel decoder start identical in every arm."""
    torch.manual_seed(seed)
    model = GPAForPreTraining(model_config(dataset, settings, **gpa_fields))
    # The MAM head draws from the RNG before the CLS token is initialised, so copy MAE's initial weights over.
    torch.manual_seed(seed)
    reference = GPAForPreTraining(model_config(dataset, settings, gpa_prediction=False))
    model.vit.load_state_dict(reference.vit.state_dict())
    model.decoder.load_state_dict(reference.decoder.state_dict())
    return model


def save_checkpoint(model: GPAForPreTraining, path: Path, arrays: dict[str, torch.Tensor]) -> None:
    """The model and, when the arrays carry their statistics, an image processor that normalises as they were.

    With it, ``run_knn.py``, ``run_linear_probe.py`` or ``run_select_head.py`` on the checkpoint see the inputs the
    benchmark trained on, instead of Fashion-MNIST's default statistics.
    """
    model.save_pretrained(path)
    if "pixel_mean" not in arrays:
        return
    size = model.config.image_size
    transformers.ViTImageProcessorPil(
        size={"height": size, "width": size},
        resample=Image.Resampling.BICUBIC,
        image_mean=[float(arrays["pixel_mean"])],
        image_std=[float(arrays["pixel_std"])],
    ).save_pretrained(path)


def object_patches_of(pixel_masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, S, S) bool pixel masks -> (B, n) bool: patches at least half covered by the garment."""
    from modeling_gpa.data.ground_truth import object_patches

    return object_patches(pixel_masks, patch_size)


class TimeBudgetReached(Exception):
    """Raised at the end of an epoch past ``--time_budget_minutes``; the run's state is on disk to resume from."""


@dataclasses.dataclass
class Progress:
    """Where a pretraining run stands at an epoch boundary: enough to go on to the same numbers after a restart.

    ``losses`` holds one scalar per step, ``masks`` and ``objects`` (32, n) int8 per step (or one block of them after
    a resume); all but ``objects`` stay on ``device``.
    """

    model: GPAForPreTraining
    optimizer: torch.optim.Optimizer
    data_rng: torch.Generator
    noise_rng: torch.Generator
    device: str
    epoch: int = 0
    seconds: float = 0.0
    losses: list[torch.Tensor] = dataclasses.field(default_factory=list)
    masks: list[torch.Tensor] = dataclasses.field(default_factory=list)
    objects: list[torch.Tensor] = dataclasses.field(default_factory=list)

    def save(self, path: Path) -> None:
        """Writes the state; a run killed mid-write keeps the previous epoch's."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_rng": self.data_rng.get_state(),
            "noise_rng": self.noise_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "seconds": self.seconds,
            "losses": torch.stack(self.losses).cpu(),
            "masks": torch.cat(self.masks).cpu(),
            "objects": torch.cat(self.objects),
        }
        if self.device.startswith("cuda"):
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        save_atomically(state, path)

    def resume(self, path: Path) -> None:
        """Loads what ``save`` wrote into the model, optimizer, random generators and curves."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_rng.set_state(state["data_rng"])
        self.noise_rng.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch, self.seconds = state["epoch"], state["seconds"]
        self.losses = list(state["losses"].to(self.device))
        self.masks = [state["masks"].to(self.device)]
        self.objects = [state["objects"]]


def pretrain(
    model: GPAForPreTraining,
    arrays: dict[str, torch.Tensor],
    settings: Settings,
    seed: int,
    patch_size: int,
    random_masking: bool,
    device: str,
    *,
    label: str = "",
    state_path: Path | None = None,
    deadline: float | None = None,
) -> dict:
    """Trains ``model`` in place with AdamW (betas 0.9/0.95), cosine lr with warm-up, per-step mask progress.

    Data order and flips come from a generator seeded by ``seed`` alone, MAE's noise from another: identical across
    arms. After every epoch the run's ``Progress`` goes to ``state_path``, and a run that finds that file goes on from
    it, to the same numbers as an uninterrupted run. Past ``deadline`` (``time.time()``) it raises
    ``TimeBudgetReached`` after the epoch's state is saved. Returns the loss curve, training wall time (state saves
    excluded) and the (masks, object patches) of the first 32 images of every step.
    """
    images, pixel_masks = arrays["train_x"], arrays["train_mask"]
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    lr = settings.blr * settings.batch_size / 256
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    data_rng = torch.Generator().manual_seed(seed)
    noise_rng = torch.Generator().manual_seed(seed + 10_000)
    torch.manual_seed(seed + 20_000)
    progress = Progress(model, optimizer, data_rng, noise_rng, device)
    if state_path is not None and state_path.is_file():
        progress.resume(state_path)
        print(f"[{label}] resuming after epoch {progress.epoch}/{settings.epochs}", flush=True)
    batch_size = min(settings.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = int(settings.warmup_epochs * steps_per_epoch)
    num_patches = model.vit.embeddings.patch_embeddings.num_patches
    step = progress.epoch * steps_per_epoch
    for epoch in range(progress.epoch, settings.epochs):
        start = time.perf_counter()
        for batch, batch_masks in flipped_batches(images, pixel_masks, batch_size, data_rng):
            batch = batch.to(device)
            noise = torch.rand(batch_size, num_patches, generator=noise_rng).to(device) if random_masking else None
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps, warmup_steps, lr)
            output = model(batch, noise=noise, mask_progress=step / max(1, total_steps - 1))
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            optimizer.step()
            model.update_teacher(epoch)
            # Kept on the device: a per-step .item() or .cpu() would stall an accelerator after every step.
            progress.losses.append(output.loss.detach())
            progress.masks.append(output.mask[:32].detach().to(torch.int8))
            progress.objects.append(object_patches_of(batch_masks[:32], patch_size).to(torch.int8))
            step += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        progress.epoch, progress.seconds = epoch + 1, progress.seconds + time.perf_counter() - start
        epoch_loss = torch.stack(progress.losses[-steps_per_epoch:]).float().mean().item()
        print(
            f"[{label}] epoch {epoch + 1}/{settings.epochs} loss {epoch_loss:.4f} | {progress.seconds:.0f} s",
            flush=True,
        )
        if state_path is not None and epoch + 1 < settings.epochs:
            progress.save(state_path)
            if deadline is not None and time.time() > deadline:
                raise TimeBudgetReached(
                    f"[{label}] time budget reached after epoch {epoch + 1}/{settings.epochs}; run the same command "
                    "again to resume from there."
                )
    losses = torch.stack(progress.losses).float().cpu().tolist()
    if not all(math.isfinite(loss) for loss in losses):
        raise RuntimeError("Pretraining diverged (non-finite loss); lower --blr.")
    return {
        "pretrain_seconds": progress.seconds,
        "steps": step,
        "loss_first": statistics.fmean(losses[: max(1, steps_per_epoch)]),
        "loss_last": statistics.fmean(losses[-max(1, steps_per_epoch) :]),
        "masks": torch.cat(progress.masks).cpu(),
        "objects": torch.cat(progress.objects),
    }


def mask_recall(masks: torch.Tensor, objects: torch.Tensor) -> dict[str, float]:
    """Object recall of the training masks overall and over the last quarter of training (most GPA-driven)."""
    metric = load_metric("object_recall")
    overall = metric.compute(predictions=masks.numpy(), references=objects.numpy())
    tail = len(masks) - len(masks) // 4
    late = metric.compute(predictions=masks[tail:].numpy(), references=objects[tail:].numpy())
    return {
        "mask_object_recall": overall["object_recall"],
        "mask_object_recall_last_quarter": late["object_recall"],
        "object_fraction": overall["object_fraction"],
    }


def garment_masked_share(result: dict, mask_ratio: float, num_patches: int = NUM_PATCHES) -> float | None:
    """Share of all garment patches that an arm's training masks hid, ``sum |mask & garment| / sum |garment|``.

    Every training mask hides exactly k = ``num_masked_patches(n, mask_ratio)`` patches, so this follows from the
    cached mask recall (``sum |mask & garment| / (N k)``) and garment share (``sum |garment| / (N n)``); uniformly
    random masks hide k / n of the garment (37 / 49 = 75.5% at mask ratio 0.75). ``None`` for a reference.
    """
    if "mask_object_recall" not in result or not result.get("object_fraction"):
        return None
    num_masked = num_masked_patches(num_patches, mask_ratio)
    return result["mask_object_recall"] * num_masked / (result["object_fraction"] * num_patches)


def with_garment_masked(results: list[dict], mask_ratio: float) -> list[dict]:
    """The results with ``garment_masked`` (``garment_masked_share``) added where it applies."""
    shares = [garment_masked_share(result, mask_ratio) for result in results]
    return [
        result if share is None else result | {"garment_masked": share}
        for result, share in zip(results, shares, strict=True)
    ]


def fewshot_indices(num_train: int, seed: int) -> torch.Tensor:
    """(FEWSHOT_IMAGES,) indices of the training images that few-shot selection uses for ``seed``."""
    rng = torch.Generator().manual_seed(seed + 30_000)
    return torch.randperm(num_train, generator=rng)[:FEWSHOT_IMAGES]


def fewshot_head_selection(teacher: torch.nn.Module, arrays: dict, patch_size: int, seed: int, queries: str = "all"):
    """``select_attention_head`` of ``teacher`` on the ``FEWSHOT_IMAGES`` train images of ``seed``, scoring with
    ``queries`` (``"cls"``: the CLS row)."""
    from modeling_gpa.head_selection import select_attention_head

    index = fewshot_indices(len(arrays["train_x"]), seed)
    objects = object_patches_of(arrays["train_mask"][index], patch_size)
    return select_attention_head(teacher, arrays["train_x"][index], objects, queries=queries)


def fewshot_selection(teacher_dir: Path, arrays: dict, patch_size: int, seed: int, queries: str = "all") -> dict:
    """Block and head of the teacher whose top-k score best covers the garment on ``FEWSHOT_IMAGES`` train images."""
    from modeling_gpa.teacher import load_pretrained_teacher

    teacher = load_pretrained_teacher(str(teacher_dir))
    selection = fewshot_head_selection(teacher, arrays, patch_size, seed, queries)
    return {
        "layer": selection.best_layer,
        "head": selection.best_head,
        "recall": selection.best_recall,
        "recall_ceiling": selection.recall_ceiling,
        "num_tied_best": selection.num_tied_best,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------


def evaluate_features(
    train: torch.Tensor, test: torch.Tensor, arrays: dict, settings: Settings, seed: int, device: str
) -> dict:
    """k-NN top-1 and linear-probe accuracy on the test set from (N, D) train and (M, D) test features."""
    train_y, test_y = arrays["train_y"], arrays["test_y"]
    train, test = train.to(device), test.to(device)
    scores = knn_scores(train, train_y, test, 10, k=settings.knn_k, temperature=settings.knn_temperature)
    knn = load_metric("accuracy").compute(predictions=scores.argmax(1).numpy(), references=test_y.numpy())
    probe = fit_linear_probe(
        train,
        train_y,
        10,
        epochs=settings.probe_epochs,
        batch_size=settings.probe_batch_size,
        optimizer=settings.probe_optimizer,
        lr=settings.probe_lr,
        warmup_epochs=max(1, settings.probe_epochs // 10),
        seed=seed,
        device=device,
    )
    predictions = probe_logits(probe, test).argmax(1)
    linear = load_metric("accuracy").compute(predictions=predictions.numpy(), references=test_y.numpy())
    return {"knn": knn["accuracy"], "linear": linear["accuracy"]}


def evaluate_checkpoint(checkpoint: Path, arrays: dict, settings: Settings, seed: int, device: str) -> dict:
    """CLS and mean-pooled k-NN / linear-probe accuracy of the encoder in ``checkpoint`` (loaded as ``ViTModel``)."""
    encoder = load_encoder(str(checkpoint))
    results = {}
    for pooling in ("cls", "mean"):
        train = encode(encoder, arrays["train_x"], pooling, batch_size=512, device=device)
        test = encode(encoder, arrays["test_x"], pooling, batch_size=512, device=device)
        for name, value in evaluate_features(train, test, arrays, settings, seed, device).items():
            results[f"{name}_{pooling}"] = value
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Runs, cached per (dataset, arm, seed)
# ----------------------------------------------------------------------------------------------------------------------


def run_dir(work_dir: Path, settings: Settings, dataset: str, name: str, seed: int) -> Path:
    return work_dir / f"runs-{settings.key(dataset)}" / dataset / name / f"seed{seed}"


def flipped_batches(
    images: torch.Tensor, pixel_masks: torch.Tensor, batch_size: int, data_rng: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (B, C, H, W) images and their (B, H, W) object masks: a random order drawn from ``data_rng``
    (the last incomplete batch dropped), each image and its mask flipped left-right with probability 1/2."""
    order = torch.randperm(len(images), generator=data_rng)
    flips = torch.rand(len(images), generator=data_rng) < 0.5
    steps = len(images) // batch_size
    for index in order[: steps * batch_size].view(steps, batch_size):
        flip = flips[index].view(-1, 1, 1)
        batch_masks = torch.where(flip, pixel_masks[index].flip(-1), pixel_masks[index])
        yield torch.where(flip.unsqueeze(1), images[index].flip(-1), images[index]), batch_masks


def cached(path: Path) -> dict | None:
    result = path / "result.json"
    return json.loads(result.read_text()) if result.is_file() else None


def save_result(path: Path, result: dict) -> dict:
    path.mkdir(parents=True, exist_ok=True)
    staging = path / f"result.json.{os.getpid()}.tmp"
    staging.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    os.replace(staging, path / "result.json")
    return result


@dataclasses.dataclass(frozen=True)
class Job:
    """One dataset and seed of the benchmark: its arrays and settings, where its runs go and what runs them."""

    dataset: str
    seed: int
    arrays: dict[str, torch.Tensor]
    settings: Settings
    work_dir: Path
    device: str
    deadline: float | None = None

    def path(self, name: str) -> Path:
        return run_dir(self.work_dir, self.settings, self.dataset, name, self.seed)

    def evaluate(self, checkpoint: Path) -> dict:
        return evaluate_checkpoint(checkpoint, self.arrays, self.settings, self.seed, self.device)


def run_reference(name: str, job: Job) -> dict:
    """``random_init``: the seed's initial encoder (the control arm's teacher too); ``raw_pixels``: pixel features."""
    path = job.path(name)
    if (result := cached(path)) is not None:
        return result
    if name == "raw_pixels":
        train, test = job.arrays["train_x"].flatten(1), job.arrays["test_x"].flatten(1)
        metrics = {
            f"{key}_pixels": value
            for key, value in evaluate_features(train, test, job.arrays, job.settings, job.seed, job.device).items()
        }
    else:
        model = initial_model(job.dataset, job.settings, job.seed, gpa_prediction=False)
        save_checkpoint(model, path / "checkpoint", job.arrays)
        metrics = job.evaluate(path / "checkpoint")
    return save_result(path, {"dataset": job.dataset, "arm": name, "seed": job.seed, **metrics})


def arm_fields(arm: str, job: Job) -> tuple[dict, dict | None]:
    """GPAConfig fields of an arm and, for the pretrained teachers, the few-shot selection that set them."""
    if arm == "mae":
        return {"gpa_prediction": False}, None
    if arm in ("gpa_self", "gpa_self_mam"):
        return {"gpa_teacher": "self", "gpa_prediction": arm == "gpa_self_mam"}, None
    if arm == "gpa_random_teacher":
        run_reference("random_init", job)
        teacher = job.path("random_init") / "checkpoint"
        return {"gpa_teacher": "pretrained", "gpa_teacher_name_or_path": str(teacher)}, None
    run_arm("mae", job)
    teacher = job.path("mae") / "checkpoint"
    fields = {"gpa_teacher": "pretrained", "gpa_teacher_name_or_path": str(teacher)}
    if arm == "gpa_pretrained_last":
        return fields, None
    selection = fewshot_selection(teacher, job.arrays, patch_size_for(job.dataset, job.settings), job.seed)
    return {**fields, "gpa_layer": selection["layer"], "gpa_head": selection["head"]}, selection


def run_arm(arm: str, job: Job, fields_of=arm_fields) -> dict:
    """Pretrains one arm for one seed (or loads its cached result, or resumes its last epoch) and evaluates it.

    ``fields_of(arm, job)`` gives the arm's GPAConfig fields and few-shot selection ([`arm_fields`] by default).
    """
    path = job.path(arm)
    if (result := cached(path)) is not None:
        return result
    fields, selection = fields_of(arm, job)
    model = initial_model(job.dataset, job.settings, job.seed, **fields)
    path.mkdir(parents=True, exist_ok=True)
    label = f"{job.dataset} {arm} seed {job.seed}"
    stats = pretrain(
        model,
        job.arrays,
        job.settings,
        job.seed,
        patch_size_for(job.dataset, job.settings),
        arm == "mae",
        job.device,
        label=label,
        state_path=path / PRETRAIN_STATE,
        deadline=job.deadline,
    )
    save_checkpoint(model, path / "checkpoint", job.arrays)
    metrics = job.evaluate(path / "checkpoint")
    recall = mask_recall(stats.pop("masks"), stats.pop("objects"))
    result = {"dataset": job.dataset, "arm": arm, "seed": job.seed, **metrics, **stats, **recall, "fewshot": selection}
    print(
        f"[{label}] knn cls {metrics['knn_cls']:.4f} mean {metrics['knn_mean']:.4f} | linear "
        f"cls {metrics['linear_cls']:.4f} mean {metrics['linear_mean']:.4f} | mask recall "
        f"{recall['mask_object_recall']:.3f} | {stats['pretrain_seconds']:.0f} s",
        flush=True,
    )
    save_result(path, result)
    (path / PRETRAIN_STATE).unlink(missing_ok=True)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------

COLUMNS = (
    ("knn_cls", "k-NN CLS"),
    ("knn_mean", "k-NN mean"),
    ("linear_cls", "linear CLS"),
    ("linear_mean", "linear mean"),
)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: list[dict]) -> dict:
    """Per dataset and arm: mean, std and n of every metric over seeds."""
    summary: dict[str, dict[str, dict]] = {}
    for dataset in DATASETS:
        for name in (*ARMS, *REFERENCES):
            rows = [r for r in results if r["dataset"] == dataset and r["arm"] == name]
            if not rows:
                continue
            keys = [k for k, v in rows[0].items() if isinstance(v, float) and k != "seed"]
            summary.setdefault(dataset, {})[name] = {
                key: dict(zip(("mean", "std"), mean_std([r[key] for r in rows]), strict=True)) for key in keys
            } | {"seeds": sorted(r["seed"] for r in rows)}
    return summary


def cell(stats: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if stats is None:
        return "–"
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"


def markdown(summary: dict, meta: dict) -> str:
    s = meta["settings"]
    lines = [
        "# MAE vs GPA masking on Fashion-MNIST (small ViT, CPU-sized)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; machine: {meta['machine']}; device: {meta['device']}; {meta.get('workers', 1)} worker "
        f"process(es) of {meta['threads']} thread(s); {meta['versions']}.",
        "",
        f"Setup: ViT with {s['num_layers']} blocks, width {s['hidden_size']}, {s['num_heads']} heads, 49 patches "
        f"(plain 28x28 / patch 4; cluttered {s['canvas_size']}x{s['canvas_size']} / patch {s['canvas_size'] // 7}); "
        f"decoder {s['decoder_layers']}x{s['decoder_hidden_size']}; mask ratio {s['mask_ratio']}, norm_pix_loss "
        f"on plain, {s.get('cluttered_norm_pix_loss')} on cluttered; "
        f"{s['epochs']} epochs over {s['train_samples']} training images, batch {s['batch_size']}, AdamW blr "
        f"{s['blr']}. Cluttered: garment side {s['garment_scale_min']}-{s['garment_scale_max']} x "
        f"half the canvas, backgrounds of strength {s['background_strength']}, blur {s['background_blur']}. "
        f"Evaluation on {s['test_samples']} test images: weighted k-NN (k={s['knn_k']}, T={s['knn_temperature']}, "
        f"bank = the training images) and a linear probe (BatchNorm + Linear, {s['probe_optimizer']} lr "
        f"{s['probe_lr']}, "
        f"{s['probe_epochs']} epochs of batch {s['probe_batch_size']}) on frozen CLS or mean-pooled features.",
        "",
        "Accuracies in % as mean ± std over seeds (n in the last column). *Mask recall*: share of the patches each arm "
        "masked during pretraining that lie on the garment (first 32 images of every step, all of training / last "
        "quarter); a uniformly random mask expects the garment's patch share (given for MAE, whose masks are random). "
        "*Garment masked*: the share of all garment patches those masks hid (random masks: 37 of 49, 75.5%). "
        "*Pretrain s*: wall time of the arm's own pretraining (the pretrained-teacher arms also need the MAE arm's). "
        + SETTING_NOTE,
        "",
    ]
    for dataset, arms in summary.items():
        lines += [
            f"## {dataset.capitalize()} Fashion-MNIST",
            "",
            "| arm | setting | k-NN CLS | k-NN mean | linear CLS | linear mean | mask recall (all / last ¼) | "
            "pretrain s | seeds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, stats in arms.items():
            if name == "raw_pixels":
                values = [cell(stats.get("knn_pixels")), "", cell(stats.get("linear_pixels")), ""]
            else:
                values = [cell(stats.get(key)) for key, _ in COLUMNS]
            recall = "–"
            if "mask_object_recall" in stats:
                recall = (
                    f"{cell(stats['mask_object_recall'])} / {cell(stats['mask_object_recall_last_quarter'])}"
                    f" (garment share {stats['object_fraction']['mean'] * 100:.1f}; garment masked "
                    f"{stats['garment_masked']['mean'] * 100:.0f}%)"
                )
            seconds = f"{stats['pretrain_seconds']['mean']:.0f}" if "pretrain_seconds" in stats else "–"
            lines.append(
                f"| {ARM_DESCRIPTIONS[name]} | {ARM_SETTINGS[name]} | {' | '.join(values)} | {recall} | {seconds} | "
                f"{len(stats['seeds'])} |"
            )
        lines.append("")
    lines += [
        "What these numbers mean: a like-for-like comparison of masking strategies for a small ViT trained briefly on "
        "small grayscale images, where every arm shares model, data order, schedule and seeds. Differences smaller "
        "than about two standard deviations are not evidence either way.",
        "",
        "What they do not mean: they do not test the paper's ImageNet ViT-B/16 claims (200 epochs, 224x224, "
        "fine-tuning 82.23 -> 83.22, linear probe 50.8 -> 64.9); a small model trained for few epochs may not reach "
        "the regime where a teacher's attention helps. Raw-pixel k-NN and linear values are listed under the CLS "
        "columns. Few-shot selections (block, head, recall on the 10 images, its ceiling, ties) per seed are in the "
        "JSON. Every committed run and what it means: `benchmarks/README.md`; the sweep that set the default recipe: "
        "`benchmarks/fashion_mnist_cluttered_sweep_h100.md`.",
        "",
    ]
    return "\n".join(lines)


def write_report(results: list[dict], meta: dict, prefix: Path) -> None:
    summary = summarize(with_garment_masked(results, meta["settings"]["mask_ratio"]))
    prefix.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "summary": summary, "runs": results}
    prefix.with_suffix(".json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    prefix.with_suffix(".md").write_text(markdown(summary, meta))


def environment(device: str) -> tuple[str, str]:
    cpu = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores"
    if device.startswith("cuda"):
        cpu += f", {torch.cuda.get_device_name()}"
    versions = f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    return cpu, versions


def parse_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean; allowed values: true, false.")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and one flag per ``Settings`` field (``--epochs 80``...), unset by default."""
    parser.add_argument("--quick", action="store_true", help="A small size that finishes in under 5 minutes.")
    for field in dataclasses.fields(Settings):
        kind = parse_bool if isinstance(field.default, bool) else type(field.default)
        parser.add_argument(f"--{field.name}", type=kind, default=None)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The ``Settings`` the flags of ``add_settings_arguments`` name: defaults (or ``QUICK``) with the flags set."""
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if getattr(args, f.name) is not None
    }
    return Settings(**({**QUICK, **overrides} if args.quick else overrides))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True, help="Cached data, checkpoints and per-run results.")
    parser.add_argument(
        "--output",
        "--results_prefix",
        dest="results_prefix",
        default=str(REPO_ROOT / "outputs" / "benchmarks" / "fashion_mnist"),
        help="Prefix of the .md and .json summary; committed results are written on purpose with "
        "--output benchmarks/fashion_mnist.",
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="Default 0 1 2 (0 1 with --quick).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 leaves a core free).")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Run each (dataset, seed) in its own process, this many at a time (one thread each unless --threads).",
    )
    parser.add_argument(
        "--time_budget_minutes",
        type=float,
        default=None,
        help="Stop after the first epoch that ends past this many minutes, keeping its state and every finished run; "
        "the same command again resumes from there.",
    )
    # Wall-clock end of --time_budget_minutes, handed to worker processes so that they share one budget.
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no_report", action="store_true", help="Run only (for parallel workers); no Markdown/JSON.")
    parser.add_argument("--report_only", action="store_true", help="Report the cached results; train nothing.")
    add_settings_arguments(parser)
    args = parser.parse_args(argv)
    args.settings = settings_from_args(args)
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2]
    if args.workers < 1:
        parser.error(f"--workers={args.workers} must be at least 1.")
    if args.time_budget_minutes is not None:
        if args.time_budget_minutes < 0:
            parser.error(f"--time_budget_minutes={args.time_budget_minutes} must be at least 0.")
        if args.deadline is None:
            args.deadline = time.time() + 60 * args.time_budget_minutes
    if args.settings.probe_optimizer not in ("sgd", "lars"):
        parser.error(f"--probe_optimizer={args.settings.probe_optimizer!r}; allowed values: sgd, lars.")
    if not 0 < args.settings.garment_scale_min <= args.settings.garment_scale_max <= 2:
        parser.error(
            f"--garment_scale_min={args.settings.garment_scale_min} and --garment_scale_max="
            f"{args.settings.garment_scale_max} must satisfy 0 < min <= max <= 2 (the garment must fit the canvas)."
        )
    if args.settings.train_samples < args.settings.batch_size and args.settings.train_samples < 2:
        parser.error("--train_samples must be at least 2.")
    return args


def run_in_workers(argv: list[str], args: argparse.Namespace) -> None:
    """Runs every (dataset, seed) of ``args`` in a process of its own, ``args.workers`` at a time.

    Each worker is this script with ``argv`` and that one dataset and seed (later flags win in argparse); workers share
    the work dir, so finished runs are skipped and the report reads them all from the cache afterwards.
    """
    jobs = [(dataset, seed) for seed, dataset in itertools.product(args.seeds, args.datasets)]
    threads = [] if args.threads else ["--threads", "1"]
    deadline = [] if args.deadline is None else ["--deadline", repr(args.deadline)]

    def run(numbered_job: tuple[int, tuple[str, int]]) -> None:
        number, (dataset, seed) = numbered_job
        # The first wave always starts, so every call makes progress, as the first run does without workers.
        if number >= args.workers and args.deadline is not None and time.time() > args.deadline:
            return
        program = REPO_ROOT / "benchmarks" / "benchmark_fashion_mnist.py"
        command = [sys.executable, str(program), *argv, *threads, *deadline, "--workers", "1"]
        command += ["--no_report", "--datasets", dataset, "--seeds", str(seed)]
        completed = subprocess.run(command, stderr=subprocess.PIPE, text=True)
        if completed.returncode:
            reason = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the worker for {dataset} seed {seed} failed: {reason}")

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(run, enumerate(jobs)))


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir)
    settings = args.settings
    results = []
    if args.workers > 1 and not args.report_only:
        run_in_workers(sys.argv[1:] if argv is None else argv, args)
    if args.report_only or args.workers > 1:
        for dataset, name, seed in itertools.product(args.datasets, (*REFERENCES, *args.arms), args.seeds):
            if (result := cached(run_dir(work_dir, settings, dataset, name, seed))) is not None:
                results.append(result)
    else:
        arrays = {}
        for dataset in args.datasets:
            settings_file = work_dir / f"runs-{settings.key(dataset)}" / "settings.json"
            settings_file.parent.mkdir(parents=True, exist_ok=True)
            settings_file.write_text(json.dumps(settings.for_dataset(dataset), indent=2, sort_keys=True) + "\n")
            arrays[dataset] = load_arrays(dataset, settings, work_dir)
        # Seed-major order: a run stopped early still has the same seeds for every dataset and arm.
        try:
            for seed, dataset in itertools.product(args.seeds, args.datasets):
                job = Job(dataset, seed, arrays[dataset], settings, work_dir, args.device, args.deadline)
                for name in REFERENCES:
                    results.append(run_reference(name, job))
                for arm in args.arms:
                    results.append(run_arm(arm, job))
        except TimeBudgetReached as stop:
            print(stop, flush=True)
    if not args.no_report:
        machine, versions = environment(args.device)
        meta = {
            "command": " ".join(["python", *map(shlex.quote, [os.path.relpath(sys.argv[0], REPO_ROOT), *sys.argv[1:]])])
            if argv is None
            else " ".join(["python benchmarks/benchmark_fashion_mnist.py", *map(shlex.quote, argv)]),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine,
            "device": args.device,
            "threads": torch.get_num_threads() if args.workers == 1 else (args.threads or 1),
            "workers": args.workers,
            "versions": versions,
            "settings": dataclasses.asdict(settings),
            "seeds": args.seeds,
        }
        write_report(results, meta, Path(args.results_prefix))
        print(f"wrote {args.results_prefix}.md and .json ({len(results)} runs)")
    return results


if __name__ == "__main__":
    main()
