"""UperNet semantic segmentation on cluttered Fashion-MNIST over MAE, GPA and random-init encoders, over seeds.

    python benchmarks/benchmark_segmentation.py --work_dir outputs/seg_bench            # the committed size
    python benchmarks/benchmark_segmentation.py --work_dir outputs/seg_quick --quick    # < 1 minute

Per seed, the cluttered benchmark's ViT (``benchmarks.measuring.fashion_mnist``: 56x56 canvases, 8-pixel patches,
width 96, 4 blocks) is pretrained fresh at a short schedule by two arms: ``mae`` (random masking) and
``gpa_pretrained_last`` (GPA's paper setting: the ``mae`` checkpoint of the same seed as frozen teacher, last block
and head, MAM). Each checkpoint, and the seed's random initial encoder (``random_init``), is then fine-tuned as
``UperNetForSemanticSegmentation`` over ``GPABackbone`` (BEiT/MAE four-scale neck over blocks 1-4, FCN auxiliary head
at weight 0.4) with MAE's mmsegmentation recipe scaled to a CPU: AdamW, layer decay 0.65, weight decay 0.05, drop
path 0.1, linear warmup then poly decay, flips as the only augmentation, and evaluated by slide inference (one
window: crop 56 on 56-pixel canvases) with the offline ``mean_iou`` module over 11 classes (background + 10
garments). Every pretraining and fine-tuning run caches its result under ``<work_dir>``; a rerun skips them.

It also times one UperNet training step over ``GPABackbone`` and over Transformers' ``BeitBackbone`` of the same
width, depth and input (absolute position embeddings, no relative bias): the ratio is written with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.measuring.fashion_mnist import (
    Settings,
    cached,
    environment,
    flipped_batches,
    initial_model,
    load_arrays,
    patch_size_for,
    pretrain,
    save_checkpoint,
    save_result,
)
from modeling_gpa.data.segmentation import CLUTTERED_SEGMENTATION_CLASSES
from modeling_gpa.evaluation.metric_loading import load_metric
from modeling_gpa.evaluation.segmentation import (
    SegmentationRecipe,
    evaluate_segmentation,
    poly_schedule,
    segmentation_param_groups,
    upernet_for_segmentation,
)

ARMS = ("random_init", "mae", "gpa_pretrained_last")
ARM_DESCRIPTIONS = {
    "random_init": "random-init encoder",
    "mae": "MAE: random masking",
    "gpa_pretrained_last": "GPA, pretrained (MAE) teacher, last block/head, MAM",
}
ID2LABEL = dict(enumerate(CLUTTERED_SEGMENTATION_CLASSES))
PRETRAIN = dict(train_samples=4000, test_samples=500, epochs=3)
FINETUNE = dict(max_steps=60, batch_size=8, warmup_steps=6, learning_rate=1e-3, decode_channels=16)
QUICK_PRETRAIN = dict(train_samples=128, test_samples=32, epochs=1, hidden_size=32, num_layers=4, num_heads=2)
QUICK_FINETUNE = dict(max_steps=2, batch_size=8, warmup_steps=1, learning_rate=1e-3, decode_channels=16)


def cpu_recipe(finetune: dict, canvas_size: int) -> SegmentationRecipe:
    """MAE's recipe with the steps, batch, lr and head widths of ``finetune`` and one window over the canvas."""
    return SegmentationRecipe(
        learning_rate=finetune["learning_rate"],
        warmup_steps=finetune["warmup_steps"],
        max_steps=finetune["max_steps"],
        per_device_train_batch_size=finetune["batch_size"],
        total_batch_size=finetune["batch_size"],
        crop_size=canvas_size,
        image_scale=(canvas_size, canvas_size),
        stride=canvas_size * 2 // 3,
        decode_channels=finetune["decode_channels"],
        auxiliary_channels=finetune["decode_channels"] // 2,
    )


def label_maps(arrays: dict, split: str) -> torch.Tensor:
    """(N, S, S) int64: 0 on the background, 1 + the garment's class on its pixels."""
    return arrays[f"{split}_mask"].long() * (arrays[f"{split}_y"].view(-1, 1, 1) + 1)


def pretrained_checkpoint(arm: str, settings: Settings, seed: int, arrays: dict, work_dir: Path) -> Path:
    """The ``arm``'s pretrained checkpoint for ``seed`` (trained here unless cached)."""
    path = work_dir / f"pretrain-{settings.key('cluttered')}" / arm / f"seed{seed}"
    if cached(path) is not None:
        return path / "checkpoint"
    fields = {"gpa_prediction": False}
    if arm == "gpa_pretrained_last":
        teacher = pretrained_checkpoint("mae", settings, seed, arrays, work_dir)
        fields = {"gpa_teacher": "pretrained", "gpa_teacher_name_or_path": str(teacher)}
    model = initial_model("cluttered", settings, seed, **fields)
    patch_size = patch_size_for("cluttered", settings)
    stats = pretrain(model, arrays, settings, seed, patch_size, arm == "mae", "cpu", label=f"pretrain {arm} {seed}")
    save_checkpoint(model, path / "checkpoint", arrays)
    save_result(path, {"arm": arm, "seed": seed, "pretrain_seconds": stats["pretrain_seconds"]})
    return path / "checkpoint"


def finetune(
    checkpoint: Path | None, settings: Settings, recipe: SegmentationRecipe, seed: int, arrays: dict, batch_size: int
) -> dict:
    """UperNet over the encoder of ``checkpoint`` (the seed's random initial encoder when None), trained with the
    recipe's optimizer and schedule on flipped batches, then its test mIoU by slide inference."""
    torch.manual_seed(seed)
    out_indices = list(range(1, settings.num_layers + 1))[-4:]
    if checkpoint is None:
        encoder = initial_model("cluttered", settings, seed, gpa_prediction=False)
        model = upernet_for_segmentation(None, ID2LABEL, recipe, out_indices, encoder.config)
        _, unexpected = model.backbone.vit.load_state_dict(encoder.vit.state_dict(), strict=False)
        assert all(key.startswith("layernorm.") for key in unexpected), unexpected
    else:
        model = upernet_for_segmentation(str(checkpoint), ID2LABEL, recipe, out_indices)
    groups = segmentation_param_groups(model, recipe, recipe.learning_rate)
    optimizer = torch.optim.AdamW(groups, lr=recipe.learning_rate)
    scheduler = poly_schedule(optimizer, recipe, recipe.max_steps, recipe.warmup_steps)
    images, labels = arrays["train_x"], label_maps(arrays, "train")
    data_rng = torch.Generator().manual_seed(seed)
    model.train()
    losses, step, start = [], 0, time.perf_counter()
    while step < recipe.max_steps:
        for batch, batch_labels in flipped_batches(images, labels, batch_size, data_rng):
            loss = model(pixel_values=batch, labels=batch_labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            if step % 20 == 0:
                print(f"  step {step}/{recipe.max_steps} loss {statistics.fmean(losses[-20:]):.3f}", flush=True)
            if step == recipe.max_steps:
                break
    train_seconds = time.perf_counter() - start
    test_x, test_labels = arrays["test_x"], label_maps(arrays, "test")
    batches = [
        {"pixel_values": test_x[i : i + 256], "labels": test_labels[i : i + 256]} for i in range(0, len(test_x), 256)
    ]
    metrics = evaluate_segmentation(
        model, batches, len(ID2LABEL), recipe.crop_size, recipe.stride, load_metric("mean_iou")
    )
    window = max(1, len(losses) // 10)
    return {
        **metrics,
        "loss_first": statistics.fmean(losses[:window]),
        "loss_last": statistics.fmean(losses[-window:]),
        "train_seconds": train_seconds,
    }


def step_time_ratio(hidden_size: int, num_layers: int, image_size: int, batch_size: int, repeats: int) -> dict:
    """Seconds of one UperNet training step over ``GPABackbone`` and over ``BeitBackbone`` of equal shape (median of
    ``repeats`` steps each after one warm-up step each), and their ratio.

    The two models take their steps in turn, the order flipping every round: timed one after the other, the arm
    measured first paid the allocator's warm-up and any burst of load, which moved the ratio between 1.3 and 1.7.
    """
    from transformers import BeitConfig, UperNetConfig, UperNetForSemanticSegmentation

    from modeling_gpa import GPAConfig

    shape = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(hidden_size // 64, 1),
        intermediate_size=4 * hidden_size,
        image_size=image_size,
        patch_size=16,
        out_indices=list(range(1, num_layers + 1))[-4:],
        add_fpn=True,
        drop_path_rate=0.1,
    )
    backbones = {
        "gpa": GPAConfig(**shape),
        "beit": BeitConfig(
            **shape, use_absolute_position_embeddings=True, use_relative_position_bias=False, use_mean_pooling=False
        ),
    }
    pixel_values = torch.randn(batch_size, 3, image_size, image_size)
    labels = torch.randint(0, 11, (batch_size, image_size, image_size))
    trained = {}
    for name, backbone_config in backbones.items():
        torch.manual_seed(0)
        config = UperNetConfig(backbone_config=backbone_config, hidden_size=64, auxiliary_channels=32, num_labels=11)
        model = UperNetForSemanticSegmentation(config).train()
        trained[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    times = {name: [] for name in trained}
    for round_index in range(repeats + 1):
        order = list(trained) if round_index % 2 == 0 else list(reversed(trained))
        for name in order:
            model, optimizer = trained[name]
            start = time.perf_counter()
            loss = model(pixel_values=pixel_values, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values[1:]) for name, values in times.items()}
    return {
        **{f"{name}_step_seconds": value for name, value in seconds.items()},
        "ratio": seconds["gpa"] / seconds["beit"],
    }


def summarize(results: list[dict]) -> dict:
    summary = {}
    for arm in ARMS:
        rows = [row for row in results if row["arm"] == arm]
        if rows:
            values = [row["mean_iou"] for row in rows]
            accuracy = [row["overall_accuracy"] for row in rows]
            summary[arm] = {
                "mean_iou": statistics.fmean(values),
                "mean_iou_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "overall_accuracy": statistics.fmean(accuracy),
                "seeds": sorted(row["seed"] for row in rows),
            }
    return summary


def markdown(summary: dict, results: list[dict], meta: dict) -> str:
    lines = [
        "# UperNet semantic segmentation on cluttered Fashion-MNIST (CPU-sized)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; machine: {meta['machine']}; {meta['versions']}.",
        "",
        f"Pretraining (fresh, shorter than the cluttered schedule benchmark's): {json.dumps(meta['pretrain'])}. "
        f"Fine-tuning: {json.dumps(meta['finetune'])}; recipe {json.dumps(meta['recipe'])}.",
        "",
        "| encoder | mIoU (%) | pixel accuracy (%) | seeds |",
        "|---|---|---|---|",
    ]
    for arm, row in summary.items():
        lines.append(
            f"| {ARM_DESCRIPTIONS[arm]} | {100 * row['mean_iou']:.1f} ± {100 * row['mean_iou_sd']:.1f} | "
            f"{100 * row['overall_accuracy']:.1f} | {' '.join(map(str, row['seeds']))} |"
        )
    lines += ["", "Per run: mIoU, training loss first/last tenth, fine-tuning seconds.", ""]
    for row in results:
        lines.append(
            f"- {row['arm']} seed {row['seed']}: mIoU {100 * row['mean_iou']:.1f}, loss {row['loss_first']:.3f} -> "
            f"{row['loss_last']:.3f}, {row['train_seconds']:.0f} s"
        )
    timing = meta.get("step_time")
    if timing:
        lines += [
            "",
            f"One UperNet training step, {json.dumps(timing['shape'])}: "
            f"GPABackbone {timing['gpa_step_seconds']:.3f} s, "
            f"BeitBackbone {timing['beit_step_seconds']:.3f} s, ratio {timing['ratio']:.2f}.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default="outputs/segmentation_bench", help="Cached runs; a rerun resumes here.")
    parser.add_argument("--output", default="outputs/benchmarks/segmentation", help="Prefix of the .md and .json.")
    parser.add_argument("--seeds", type=int, nargs="+", help="Default: 0 1 2 (0 with --quick).")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--max_steps", type=int, help="Fine-tuning steps (default 60).")
    parser.add_argument("--epochs", type=int, help="Pretraining epochs (default 3).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes, one seed: under a minute.")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pretrain_fields = dict(QUICK_PRETRAIN if args.quick else PRETRAIN)
    finetune_fields = dict(QUICK_FINETUNE if args.quick else FINETUNE)
    if args.epochs is not None:
        pretrain_fields["epochs"] = args.epochs
    if args.max_steps is not None:
        finetune_fields["max_steps"] = args.max_steps
    settings = Settings(**pretrain_fields)
    work_dir = Path(args.work_dir)
    arrays = load_arrays("cluttered", settings, work_dir)
    recipe = cpu_recipe(finetune_fields, settings.canvas_size)
    finetune_key = hashlib.sha256(json.dumps(finetune_fields, sort_keys=True).encode()).hexdigest()[:10]
    results = []
    for seed in args.seeds or ([0] if args.quick else [0, 1, 2]):
        for arm in args.arms:
            path = work_dir / f"finetune-{settings.key('cluttered')}-{finetune_key}" / arm / f"seed{seed}"
            if (result := cached(path)) is None:
                checkpoint = (
                    None if arm == "random_init" else pretrained_checkpoint(arm, settings, seed, arrays, work_dir)
                )
                metrics = finetune(checkpoint, settings, recipe, seed, arrays, finetune_fields["batch_size"])
                result = save_result(path, {"arm": arm, "seed": seed, **metrics})
            print(f"[{arm} seed {seed}] mIoU {100 * result['mean_iou']:.1f}", flush=True)
            results.append(result)
    shape = (
        dict(hidden_size=64, num_layers=4, image_size=64, batch_size=2)
        if args.quick
        else dict(hidden_size=192, num_layers=4, image_size=224, batch_size=2)
    )
    step_time = {"shape": shape, **step_time_ratio(**shape, repeats=1 if args.quick else 9)}
    machine, versions = environment("cpu")
    meta = {
        "command": shlex.join(["benchmark_segmentation.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "versions": versions,
        "pretrain": pretrain_fields,
        "finetune": finetune_fields,
        "recipe": dataclasses.asdict(recipe),
        "step_time": step_time,
    }
    summary = summarize(results)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=2))
    output.with_suffix(".md").write_text(markdown(summary, results, meta))
    print(markdown(summary, results, meta))
    return summary
