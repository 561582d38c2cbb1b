"""SimMIM with random vs GPA masks on plain and cluttered Fashion-MNIST, for a ViT and a Swin student.

Per (dataset, seed): an MAE teacher (``GPAForPreTraining`` with uniform noise, no MAM) is pretrained first; its block
and head are picked by few-shot selection on 10 training images (paper section 3.4). Then for each student
(``ViTForMaskedImageModeling``, ``SwinForMaskedImageModeling``) two arms train from the same initial weights, data
order and flips: ``simmim_random`` (``run_mim.py``'s random mask) and ``simmim_gpa`` (the frozen MAE teacher's
soft-to-hard GPA mask, same mask count). Each is evaluated by k-NN and a linear probe on mean-pooled frozen features;
the object recall of its training masks (share of the garment's mask patches it hid) is recorded.

Images are zero-padded to a size the SimMIM mask grid divides: 28 -> 32 px (plain, model patch 4, mask patch 8) and
56 -> 64 px (cluttered, model patch 8, mask patch 16): an 8x8 model grid and a 4x4 mask grid on both. Every
(dataset, student, arm, seed) is cached as ``result.json`` under ``<work_dir>/runs-<settings hash>/`` and skipped when
present, so an interrupted run resumes with the same command.

    python benchmarks/benchmark_simmim_transfer.py --work_dir outputs/simmim_transfer            # default size
    # On 2 CPU cores, about 1 h 50 min as two processes sharing the work dir, then the line above for the report:
    #   ... --work_dir outputs/simmim_transfer --datasets plain --threads 1 &
    #   ... --work_dir outputs/simmim_transfer --datasets cluttered --threads 1
    python benchmarks/benchmark_simmim_transfer.py --work_dir outputs/simmim_quick --quick        # about a minute

The summary goes to ``--output`` (``.md``, ``.json``, ``.png``; default ``outputs/benchmarks/simmim_transfer``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import SwinConfig, SwinForMaskedImageModeling, ViTConfig, ViTForMaskedImageModeling

from modeling_gpa.configuration_gpa import GPAConfig
from modeling_gpa.data.ground_truth import object_patches
from modeling_gpa.evaluation import cosine_lr, knn_scores, probe_logits, train_linear_probe
from modeling_gpa.head_selection import select_attention_head
from modeling_gpa.masking import KEPT
from modeling_gpa.modeling_gpa import GPAForPreTraining
from modeling_gpa.simmim.masking import random_mask_patches, scheduled_mask_patch_groups
from modeling_gpa.simmim.trainer import SimMIMMasker, SimMIMMaskSettings

from .fashion_mnist import cached, flipped_batches, save_result

DATASETS = ("plain", "cluttered")
STUDENTS = ("vit", "swin")
ARMS = ("simmim_random", "simmim_gpa")
# References per (dataset, seed): the student's initial weights, and raw pixels (student "pixels").
REFERENCES = ("random_init", "raw_pixels")
FEWSHOT_IMAGES = 10
# (image size after padding, model patch size, mask patch size) per dataset.
GEOMETRY = {"plain": (32, 4, 8), "cluttered": (64, 8, 16)}


def protocol(settings: dict) -> str:
    """The method paragraph of the report, for the settings (a ``Settings`` as a dict) that produced it."""
    return f"""Protocol. Images zero-padded to 32 px (plain: model patch 4, mask patch 8) or 64 px (cluttered canvas:
model patch 8, mask patch 16): an 8x8 model grid and a 4x4 mask grid, ceil(16 * {settings["mask_ratio"]}) masked mask
patches per image in both arms. Students: ViTForMaskedImageModeling (hidden {settings["hidden_size"]},
{settings["num_layers"]} blocks, {settings["num_heads"]} heads) and SwinForMaskedImageModeling (embed
{settings["swin_embed_dim"]}, depths [2, 2], heads [2, 4], window 2), trained from the same initial weights, data order
and flips per seed for {settings["epochs"]} epochs over {settings["train_samples"]:,} images with AdamW (lr = blr *
batch / 256, blr {settings["blr"]}, batch {settings["batch_size"]}, cosine, {settings["warmup_epochs"]:g} warm-up
epoch). simmim_random: run_mim.py's uniform mask. simmim_gpa: the seed's MAE teacher (GPAForPreTraining without MAM,
uniform noise at mask ratio {settings["mae_mask_ratio"]}, the student ViT's size and patch grid, trained with the same
schedule), frozen; block and head by few-shot selection on 10 training images; its scores area-pooled from the 8x8
teacher grid to the 4x4 mask grid; soft 0.5 -> 0, hard 0 -> 0.5 of the masked mask patches over training (Eq. 6).
random_init: the seed's initial student, not pretrained; raw_pixels: the normalised pixels as features. Features:
mean of the last hidden states (ViT: patch tokens), on {settings["test_samples"]:,} test images; linear probe
{settings["probe_epochs"]} epochs."""


@dataclasses.dataclass
class Settings:
    """Everything that defines a run; results are cached under a hash of these fields."""

    train_samples: int = 20000
    test_samples: int = 5000
    epochs: int = 8
    batch_size: int = 128
    blr: float = 5e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    mae_mask_ratio: float = 0.75
    mask_ratio: float = 0.6
    hidden_size: int = 96
    num_layers: int = 4
    num_heads: int = 4
    swin_embed_dim: int = 48
    probe_epochs: int = 50
    probe_lr: float = 6.4
    knn_k: int = 20
    knn_temperature: float = 0.07

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


QUICK = dict(
    train_samples=256,
    test_samples=128,
    epochs=1,
    batch_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    swin_embed_dim=16,
    probe_epochs=5,
)


def load_arrays(dataset: str, settings: Settings, work_dir: Path) -> dict[str, torch.Tensor]:
    """Normalised padded images ``{split}_x`` (N, 1, S, S), labels ``{split}_y`` and garment masks ``{split}_mask``."""
    from modeling_gpa.data.cluttered import make_cluttered
    from modeling_gpa.data.fashion_mnist import garment_arrays

    key = hashlib.sha256(f"{dataset}-{settings.train_samples}-{settings.test_samples}".encode()).hexdigest()[:10]
    path = work_dir / "data" / f"{dataset}-{key}.pt"
    if path.is_file():
        return torch.load(path)
    clutter = None
    if dataset == "cluttered":
        clutter = functools.partial(make_cluttered, canvas_size=56, background_strength=0.2, background_blur=2.0)
    arrays = garment_arrays(settings.train_samples, settings.test_samples, clutter, size=GEOMETRY[dataset][0])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(arrays, path)
    return arrays


def mae_teacher(dataset: str, settings: Settings, seed: int) -> GPAForPreTraining:
    image_size, patch_size, _ = GEOMETRY[dataset]
    torch.manual_seed(seed)
    config = GPAConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=1,
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        intermediate_size=4 * settings.hidden_size,
        decoder_hidden_size=64,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=settings.num_heads,
        decoder_intermediate_size=256,
        mask_ratio=settings.mae_mask_ratio,
        norm_pix_loss=dataset == "plain",
        gpa_prediction=False,
    )
    return GPAForPreTraining(config)


def student(name: str, dataset: str, settings: Settings, seed: int) -> torch.nn.Module:
    """The seed's initial SimMIM student: the same weights in both arms."""
    image_size, patch_size, _ = GEOMETRY[dataset]
    torch.manual_seed(seed)
    if name == "vit":
        config = ViTConfig(
            image_size=image_size,
            patch_size=patch_size,
            encoder_stride=patch_size,
            num_channels=1,
            hidden_size=settings.hidden_size,
            num_hidden_layers=settings.num_layers,
            num_attention_heads=settings.num_heads,
            intermediate_size=4 * settings.hidden_size,
        )
        return ViTForMaskedImageModeling(config)
    config = SwinConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=1,
        embed_dim=settings.swin_embed_dim,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=2,
        encoder_stride=patch_size * 2,
    )
    return SwinForMaskedImageModeling(config)


def train_loop(model, arrays, settings: Settings, seed: int, step_fn) -> dict:
    """AdamW + cosine lr with warm-up; ``step_fn(model, batch, batch_masks, progress)`` returns the loss."""
    images, pixel_masks = arrays["train_x"], arrays["train_mask"]
    model.train()
    lr = settings.blr * settings.batch_size / 256
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    data_rng = torch.Generator().manual_seed(seed)
    batch_size = min(settings.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size
    total_steps = settings.epochs * steps_per_epoch
    warmup = int(settings.warmup_epochs * steps_per_epoch)
    losses, step, start = [], 0, time.perf_counter()
    for _ in range(settings.epochs):
        for batch, batch_masks in flipped_batches(images, pixel_masks, batch_size, data_rng):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps, warmup, lr)
            loss = step_fn(model, batch, batch_masks, step / max(1, total_steps - 1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError("pretraining diverged (non-finite loss); lower blr.")
    tail = max(1, steps_per_epoch)
    return {
        "pretrain_seconds": time.perf_counter() - start,
        "steps": step,
        "loss_first": statistics.fmean(losses[:tail]),
        "loss_last": statistics.fmean(losses[-tail:]),
    }


@torch.no_grad()
def features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) -> (N, D) mean-pooled last hidden states of the student's (or teacher's) encoder."""
    model.eval()
    encoder = model.vit if hasattr(model, "vit") else model.swin
    chunks = []
    for chunk in images.split(512):
        hidden = encoder(chunk).last_hidden_state
        # ViT: patch tokens after the CLS token; Swin: every token of the last stage.
        chunks.append((hidden[:, 1:] if hasattr(model, "vit") else hidden).mean(dim=1))
    return torch.cat(chunks)


def evaluate(model: torch.nn.Module, arrays: dict, settings: Settings, seed: int) -> dict:
    """k-NN top-1 and linear-probe accuracy of mean-pooled frozen features on the test set."""
    return evaluate_features(
        features(model, arrays["train_x"]), features(model, arrays["test_x"]), arrays, settings, seed
    )


def evaluate_features(train: torch.Tensor, test: torch.Tensor, arrays: dict, settings: Settings, seed: int) -> dict:
    """k-NN top-1 and linear-probe accuracy from (N, D) train and (M, D) test features."""
    train_y, test_y = arrays["train_y"], arrays["test_y"]
    scores = knn_scores(train, train_y, test, 10, k=settings.knn_k, temperature=settings.knn_temperature)
    probe = train_linear_probe(
        train,
        train_y,
        10,
        epochs=settings.probe_epochs,
        batch_size=256,
        optimizer="lars",
        lr=settings.probe_lr,
        warmup_epochs=max(1, settings.probe_epochs // 10),
        seed=seed,
    )
    linear = probe_logits(probe, test).argmax(1)
    return {
        "knn": (scores.argmax(1) == test_y).float().mean().item(),
        "linear": (linear == test_y).float().mean().item(),
    }


def run_teacher(dataset: str, seed: int, arrays: dict, settings: Settings, root: Path) -> dict:
    """Pretrains (or loads) the seed's MAE teacher and its few-shot block/head."""
    path = root / dataset / "mae_teacher" / f"seed{seed}"
    if (result := cached(path)) is not None:
        return result
    model = mae_teacher(dataset, settings, seed)
    noise_rng = torch.Generator().manual_seed(seed + 10_000)
    num_patches = model.vit.embeddings.patch_embeddings.num_patches

    def step(model, batch, _masks, progress):
        return model(batch, noise=torch.rand(len(batch), num_patches, generator=noise_rng)).loss

    stats = train_loop(model, arrays, settings, seed, step)
    model.save_pretrained(path / "checkpoint")
    index = torch.randperm(len(arrays["train_x"]), generator=torch.Generator().manual_seed(seed + 30_000))
    index = index[:FEWSHOT_IMAGES]
    patch_size = GEOMETRY[dataset][1]
    selection = select_attention_head(
        model.vit,
        arrays["train_x"][index],
        object_patches(arrays["train_mask"][index], patch_size),
        mask_ratio=settings.mask_ratio,
    )
    result = {
        "dataset": dataset,
        "arm": "mae_teacher",
        "seed": seed,
        **stats,
        "fewshot": {"layer": selection.best_layer, "head": selection.best_head, "recall": selection.best_recall},
    }
    return save_result(path, result)


def run_arm(dataset: str, student_name: str, arm: str, seed: int, arrays: dict, settings: Settings, root: Path) -> dict:
    """Pretrains one SimMIM arm (or loads its cached result) and evaluates it."""
    path = root / dataset / student_name / arm / f"seed{seed}"
    if (result := cached(path)) is not None:
        return result
    image_size, model_patch, mask_patch = GEOMETRY[dataset]
    fewshot = None
    mask_settings = SimMIMMaskSettings(
        image_size=image_size,
        mask_patch_size=mask_patch,
        model_patch_size=model_patch,
        mask_ratio=settings.mask_ratio,
        method="random",
    )
    if arm == "simmim_gpa":
        teacher = run_teacher(dataset, seed, arrays, settings, root)
        fewshot = teacher["fewshot"]
        mask_settings = dataclasses.replace(
            mask_settings,
            method="gpa",
            teacher="pretrained",
            teacher_name_or_path=str(root / dataset / "mae_teacher" / f"seed{seed}" / "checkpoint"),
            layer=fewshot["layer"],
            head=fewshot["head"],
        )
    model = student(student_name, dataset, settings, seed)
    masker = SimMIMMasker(mask_settings, model, num_channels=1)
    mask_rng = torch.Generator().manual_seed(seed + 10_000)
    hits, objects = torch.zeros(()), torch.zeros(())

    def step(model, batch, batch_masks, progress):
        nonlocal hits, objects
        if arm == "simmim_gpa":
            groups = scheduled_mask_patch_groups(
                masker.scores(batch, model),
                image_size=image_size,
                mask_patch_size=mask_patch,
                model_patch_size=model_patch,
                mask_ratio=settings.mask_ratio,
                progress=progress,
                generator=mask_rng,
            )
            masked = groups != KEPT
        else:
            masked = random_mask_patches(
                len(batch),
                image_size=image_size,
                mask_patch_size=mask_patch,
                model_patch_size=model_patch,
                mask_ratio=settings.mask_ratio,
                generator=mask_rng,
            )
        garment = object_patches(batch_masks, mask_patch)
        hits, objects = hits + (masked & garment).sum(), objects + garment.sum()
        scale = mask_patch // model_patch
        grid = masked.view(len(batch), image_size // mask_patch, -1)
        bool_masked_pos = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2).flatten(1)
        return model(batch, bool_masked_pos=bool_masked_pos).loss

    stats = train_loop(model, arrays, settings, seed, step)
    metrics = evaluate(model, arrays, settings, seed)
    result = {
        "dataset": dataset,
        "student": student_name,
        "arm": arm,
        "seed": seed,
        **metrics,
        **stats,
        "mask_object_recall": (hits / objects.clamp_min(1)).item(),
        "fewshot": fewshot,
    }
    print(
        f"[{dataset} {student_name} {arm} seed {seed}] knn {metrics['knn']:.4f} linear {metrics['linear']:.4f} "
        f"recall {result['mask_object_recall']:.3f} | {stats['pretrain_seconds']:.0f} s",
        flush=True,
    )
    return save_result(path, result)


def run_reference(dataset: str, student_name: str, seed: int, arrays: dict, settings: Settings, root: Path) -> dict:
    """``random_init``: the seed's initial student, unpretrained; ``raw_pixels`` (student "pixels"): pixel features."""
    name = "raw_pixels" if student_name == "pixels" else "random_init"
    path = root / dataset / student_name / name / f"seed{seed}"
    if (result := cached(path)) is not None:
        return result
    if name == "raw_pixels":
        metrics = evaluate_features(arrays["train_x"].flatten(1), arrays["test_x"].flatten(1), arrays, settings, seed)
    else:
        metrics = evaluate(student(student_name, dataset, settings, seed), arrays, settings, seed)
    return save_result(path, {"dataset": dataset, "student": student_name, "arm": name, "seed": seed, **metrics})


def summarize(results: list[dict]) -> dict:
    """Mean, std and n over seeds of knn, linear and mask recall per (dataset, student, arm)."""
    summary = {}
    for dataset in DATASETS:
        for student_name in (*STUDENTS, "pixels"):
            for arm in (*ARMS, *REFERENCES):
                rows = [r for r in results if (r["dataset"], r["student"], r["arm"]) == (dataset, student_name, arm)]
                if not rows:
                    continue
                cell = {"n": len(rows), "seeds": sorted(r["seed"] for r in rows)}
                for metric in ("knn", "linear", "mask_object_recall"):
                    values = [r[metric] for r in rows if metric in r]
                    if not values:
                        continue
                    cell[metric] = {
                        "mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    }
                summary[f"{dataset}/{student_name}/{arm}"] = cell
    return summary


def markdown(summary: dict, meta: dict) -> str:
    lines = [
        f"# SimMIM with random vs GPA masks: Fashion-MNIST, {meta['settings']['train_samples']:,} images, "
        f"{meta['settings']['epochs']} epochs",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Settings: {json.dumps(meta['settings'])}",
        "",
        "k-NN (k=20) and linear-probe (LARS) top-1 accuracy (%) of mean-pooled frozen features on the test set; "
        "mask recall = share of the garment's mask patches (at least half garment) that the training masks hid "
        f"(a random mask hides {meta['random_share']:.1%} in expectation). Mean ± std over the seeds listed.",
        "",
        "| dataset | student | arm | seeds | k-NN | linear | mask recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, cell in summary.items():
        dataset, student_name, arm = key.split("/")
        knn, linear, recall = cell["knn"], cell["linear"], cell.get("mask_object_recall")
        recall_cell = f"{recall['mean']:.3f} ± {recall['std']:.3f}" if recall else "–"
        lines.append(
            f"| {dataset} | {student_name} | {arm} | {','.join(map(str, cell['seeds']))} | "
            f"{100 * knn['mean']:.1f} ± {100 * knn['std']:.1f} | {100 * linear['mean']:.1f} ± "
            f"{100 * linear['std']:.1f} | {recall_cell} |"
        )
    lines += ["", protocol(meta["settings"]), ""]
    return "\n".join(lines)


def figure(summary: dict):
    """Bars of k-NN and linear-probe accuracy (mean ± std over seeds) per dataset, student and arm; a ``Figure``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, len(DATASETS), squeeze=False)[0]
    arms = (*ARMS, "random_init")
    for ax, dataset in zip(axes, DATASETS, strict=True):
        groups = [(s, m) for s in STUDENTS for m in ("knn", "linear")]
        for offset, arm in enumerate(arms):
            cells = [summary.get(f"{dataset}/{s}/{arm}") for s, _ in groups]
            means = [100 * c[m]["mean"] if c else 0.0 for c, (_, m) in zip(cells, groups, strict=True)]
            stds = [100 * c[m]["std"] if c else 0.0 for c, (_, m) in zip(cells, groups, strict=True)]
            positions = [i + (offset - 1) * 0.27 for i in range(len(groups))]
            ax.bar(positions, means, width=0.27, yerr=stds, label=arm, capsize=2)
        pixels = summary.get(f"{dataset}/pixels/raw_pixels")
        if pixels:
            ax.axhline(100 * pixels["knn"]["mean"], color="gray", linestyle="--", label="raw pixels k-NN")
        ax.set_xticks(range(len(groups)), [f"{s}\n{m}" for s, m in groups])
        ax.set_title(f"{dataset} Fashion-MNIST")
        ax.set_ylabel("top-1 accuracy (%)")
    axes[0].legend(fontsize=7)
    return fig


def run(
    work_dir: Path,
    settings: Settings,
    datasets: tuple[str, ...],
    students: tuple[str, ...],
    seeds: tuple[int, ...],
) -> list[dict]:
    """Every (dataset, seed, student, arm), cached; returns all results found for these settings."""
    root = work_dir / f"runs-{settings.key()}"
    results = []
    arrays = {dataset: load_arrays(dataset, settings, work_dir) for dataset in datasets}
    # Seeds outermost: an interrupted run has whole seeds of every dataset rather than all seeds of one.
    for seed in seeds:
        for dataset in datasets:
            for student_name in students:
                for arm in ARMS:
                    results.append(run_arm(dataset, student_name, arm, seed, arrays[dataset], settings, root))
                results.append(run_reference(dataset, student_name, seed, arrays[dataset], settings, root))
            results.append(run_reference(dataset, "pixels", seed, arrays[dataset], settings, root))
    return results


__all__ = ["ARMS", "DATASETS", "QUICK", "REFERENCES", "STUDENTS", "Settings", "figure", "markdown", "run", "summarize"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/simmim_transfer_work"))
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmarks/simmim_transfer"), help="Prefix.")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--students", nargs="+", choices=STUDENTS, default=list(STUDENTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="Tiny models and data: a smoke test.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads.")
    for field in dataclasses.fields(Settings):
        parser.add_argument(f"--{field.name}", type=type(field.default), default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    values = dict(QUICK) if args.quick else {}
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if getattr(args, f.name)})
    settings = Settings(**values)
    results = run(args.work_dir, settings, tuple(args.datasets), tuple(args.students), tuple(args.seeds))
    summary = summarize(results)
    command = "python benchmarks/benchmark_simmim_transfer.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    mask_grid = 4
    count = -(-mask_grid * mask_grid * settings.mask_ratio // 1)
    meta = {"command": command, "settings": dataclasses.asdict(settings), "random_share": count / mask_grid**2}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=2, sort_keys=True) + "\n"
    )
    args.output.with_suffix(".md").write_text(markdown(summary, meta))
    figure(summary).savefig(args.output.with_suffix(".png"), dpi=120)
    print(args.output.with_suffix(".md").read_text())
    return summary
