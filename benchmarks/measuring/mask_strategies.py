"""Every mask strategy under one protocol: cluttered Fashion-MNIST, the Fashion-MNIST benchmark's ViT and readouts.

    python benchmarks/benchmark_mask_strategies.py --work_dir outputs/strategies --quick   # a few minutes
    python benchmarks/benchmark_mask_strategies.py --work_dir outputs/strategies --threads 1 \
        --output benchmarks/mask_strategies_cpu   # the committed run: about 40 minutes

Each arm pretrains the same ViT from the same initial weights, data order, flips, optimizer and schedule with
``benchmarks.measuring.fashion_mnist.pretrain``; only ``mask_method`` differs:

- ``mae``: uniformly random masks (the Fashion-MNIST benchmark's ``mae`` arm, shared cache);
- ``block``: BEiT's block-wise masks (rectangles of >= 16 patches on the 7x7 grid: at most 6x6 of them);
- ``cls_attention``: AttMask's score, the CLS row of a frozen teacher (the ``mae`` arm's checkpoint), block and
  head by few-shot selection on 10 training images with that score, Eq. 6's schedule;
- ``gpa``: the same teacher, selection and schedule with GPA's column sum; no MAM, so that only the score differs;
- ``hpm``: HPM, an EMA copy of the whole model predicting each patch's loss, its top patches masked with a hard
  share 0 -> 0.5. HPM's momentum (0.999 -> 0.9999 over 100 epochs) averages over thousands of steps, more than a short
  run has; here it is 0.99 -> 0.999 over the first epoch (``HPM_FIELDS``).

No MAM anywhere: this compares masks. Readouts as the Fashion-MNIST benchmark (k-NN and linear probe on CLS and
mean-pooled features); *hidden*: the share of the garment's patches the training masks hid; *step time*: the arm's
pretraining wall time over the ``mae`` arm's (on a shared CPU, a rough figure: ``benchmark_speed.py`` measures
steps side by side). Results are cached per (arm, seed) under the Fashion-MNIST benchmark's layout, so an
interrupted run resumes; the summary goes to ``outputs/benchmarks/mask_strategies.md`` / ``.json`` unless
``--output`` names another prefix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from benchmarks.measuring.fashion_mnist import (
    QUICK,
    REPO_ROOT,
    Job,
    Settings,
    add_settings_arguments,
    cell,
    environment,
    fewshot_selection,
    load_arrays,
    mean_std,
    patch_size_for,
    run_arm,
    run_reference,
    with_garment_masked,
)

STRATEGIES = ("mae", "block", "cls_attention", "gpa", "hpm")
DESCRIPTIONS = {
    "mae": "random (MAE)",
    "block": "block-wise (BEiT)",
    "cls_attention": "CLS attention (AttMask), MAE teacher, few-shot block/head",
    "gpa": "GPA, MAE teacher, few-shot block/head, no MAM",
    "hpm": "HPM: predicted loss, EMA of the model",
}
HPM_FIELDS = {
    "mask_method": "hpm",
    "gpa_teacher": "ema",
    "gpa_prediction": False,
    "soft_ratio_start": 0.0,
    "soft_ratio_end": 0.0,
    "hpm_momentum_start": 0.99,
    "hpm_momentum_end": 0.999,
    "hpm_momentum_epochs": 1,
}
# The size of the committed CPU run, chosen to finish in about 40 minutes on one core of a CPU shared with other work:
# the Fashion-MNIST benchmark's ViT (hidden 96, 4 blocks), 6 epochs of a quarter of its images, one seed.
DEFAULTS = {"train_samples": 5000, "test_samples": 2000, "epochs": 6}
DATASET = "cluttered"


def strategy_fields(arm: str, job: Job) -> tuple[dict, dict | None]:
    """GPAConfig fields of a strategy arm and, for the attention scores, the few-shot selection that set them."""
    if arm == "mae":
        return {"gpa_prediction": False}, None
    if arm == "block":
        return {"mask_method": "block", "gpa_prediction": False}, None
    if arm == "hpm":
        return dict(HPM_FIELDS), None
    run_arm("mae", job)
    teacher = job.path("mae") / "checkpoint"
    queries = "cls" if arm == "cls_attention" else "all"
    selection = fewshot_selection(teacher, job.arrays, patch_size_for(job.dataset, job.settings), job.seed, queries)
    fields = {
        "mask_method": arm,
        "gpa_queries": queries,
        "gpa_teacher": "pretrained",
        "gpa_teacher_name_or_path": str(teacher),
        "gpa_prediction": False,
        "gpa_layer": selection["layer"],
        "gpa_head": selection["head"],
    }
    return fields, selection


COLUMNS = (
    ("knn_cls", "k-NN CLS"),
    ("knn_mean", "k-NN mean"),
    ("linear_cls", "linear CLS"),
    ("linear_mean", "linear mean"),
)


def summarize(results: list[dict]) -> dict:
    """Per arm: mean and std over seeds of the readouts, the garment hidden and the step time against MAE."""
    mae_seconds = {r["seed"]: r["pretrain_seconds"] for r in results if r["arm"] == "mae"}
    summary = {}
    for arm in STRATEGIES:
        runs = [r for r in results if r["arm"] == arm]
        if not runs:
            continue
        row = {key: mean_std([r[key] for r in runs]) for key, _ in COLUMNS}
        hidden = [r["garment_masked"] for r in runs if "garment_masked" in r]
        row["garment_masked"] = mean_std(hidden) if hidden else None
        ratios = [r["pretrain_seconds"] / mae_seconds[r["seed"]] for r in runs if r["seed"] in mae_seconds]
        row["time_vs_mae"] = mean_std(ratios) if ratios else None
        row["seeds"] = sorted(r["seed"] for r in runs)
        summary[arm] = {name: ({"mean": v[0], "std": v[1]} if isinstance(v, tuple) else v) for name, v in row.items()}
    return summary


def reference_means(references: list[dict]) -> dict:
    """Mean over seeds of the references' mean-pooled readouts: the random-init encoder's and raw pixels'."""
    keys = {"random_init": ("knn_mean", "linear_mean"), "raw_pixels": ("knn_pixels", "linear_pixels")}
    return {
        name: {key: mean_std([r[key] for r in references if r["arm"] == name])[0] for key in names}
        for name, names in keys.items()
        if any(r["arm"] == name for r in references)
    }


def markdown(summary: dict, meta: dict) -> str:
    header = "| strategy | " + " | ".join(title for _, title in COLUMNS) + " | garment hidden | step time / MAE |"
    lines = [
        "# Mask strategies on cluttered Fashion-MNIST, one protocol",
        "",
        f"Written by `{meta['command']}` on {meta['date']} ({meta['machine']}; {meta['versions']}). Settings: "
        f"`{json.dumps(meta['settings'], sort_keys=True)}`; seeds {meta['seeds']}. Accuracies in % (mean ± std over "
        "the seeds); *garment hidden*: the share of the garment's patches the training masks hid (random masks hide "
        "37 of 49 patches: 75.5%); *step time / MAE*: pretraining wall time over the `mae` arm's on the same shared "
        "CPU (a rough figure; `benchmark_speed.py` measures the steps side by side). What each arm is: "
        "`benchmarks/measuring/mask_strategies.py`.",
        "",
        header,
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for arm, row in summary.items():
        cells = [cell(row[key]) for key, _ in COLUMNS]
        hidden = "–" if row["garment_masked"] is None else cell(row["garment_masked"]) + "%"
        ratio = "–" if row["time_vs_mae"] is None else f"{row['time_vs_mae']['mean']:.2f}x"
        lines.append(f"| {DESCRIPTIONS[arm]} | " + " | ".join(cells) + f" | {hidden} | {ratio} |")
    refs = meta.get("references", {})
    if refs:
        init, pixels = refs["random_init"], refs["raw_pixels"]
        lines += [
            "",
            f"References at these settings (mean-pooled k-NN / linear probe): the random-init encoder "
            f"{100 * init['knn_mean']:.1f} / {100 * init['linear_mean']:.1f}, raw pixels "
            f"{100 * pixels['knn_pixels']:.1f} / {100 * pixels['linear_pixels']:.1f}.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True, help="Cached data, checkpoints and per-run results.")
    parser.add_argument(
        "--output",
        default=str(REPO_ROOT / "outputs" / "benchmarks" / "mask_strategies"),
        help="Prefix of the .md and .json summary (benchmarks/mask_strategies_cpu writes the committed one).",
    )
    parser.add_argument("--arms", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads.")
    add_settings_arguments(parser)
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> Settings:
    """``DEFAULTS`` (or the Fashion-MNIST benchmark's ``QUICK`` size) with the flags given."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if getattr(args, f.name) is not None}
    return Settings(**{**(QUICK if args.quick else DEFAULTS), **given})


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_of(args)
    work_dir = Path(args.work_dir)
    arrays = load_arrays(DATASET, settings, work_dir)
    results, references = [], []
    for seed in args.seeds:
        job = Job(DATASET, seed, arrays, settings, work_dir, args.device)
        results += [run_arm(arm, job, strategy_fields) for arm in args.arms]
        references += [run_reference(name, job) for name in ("random_init", "raw_pixels")]
    results = with_garment_masked(results, settings.mask_ratio)
    summary = summarize(results)
    machine, versions = environment(args.device)
    meta = {
        "command": "python benchmarks/benchmark_mask_strategies.py " + " ".join(argv if argv is not None else []),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "versions": versions,
        "settings": settings.for_dataset(DATASET),
        "seeds": args.seeds,
        "references": reference_means(references),
    }
    prefix = Path(args.output)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".md").write_text(markdown(summary, meta))
    runs = [{k: v for k, v in r.items() if k not in ("masks", "objects")} for r in results]
    report = {"meta": meta, "summary": summary, "runs": runs}
    prefix.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(summary, meta))
    return summary
