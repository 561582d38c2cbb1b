"""What each evaluation protocol gives on one checkpoint: run_finetune.py's recipes and run_linear_probe.py with and
without augmentation, side by side, same data and seed.

    python benchmarks/benchmark_finetune_recipes.py --model_name_or_path outputs/gpa-fashion-mnist \\
        --output benchmarks/finetune_recipes_cpu

Fine-tuning: ``--recipe mae``, ``--recipe gpa_released`` and ``--recipe plain`` (Trainer's defaults, what the script
did without flags before it had recipes), each for ``--epochs`` epochs; the two MAE-style recipes at
``--total_batch_size`` (their 1024 would leave a few steps per epoch on a small training set: the lr follows by
blr x batch / 256) with ``--warmup_epochs``. Linear probe: MAE's (LARS, a new RandomResizedCrop and flip each epoch)
and the cached-feature probe (``--augment none``), both for ``--probe_epochs`` at ``--probe_batch_size``. Every run is
a subprocess of the script, so each result is what its command line gives. Writes ``<output>.md`` and
``<output>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RUN_SCRIPTS = Path(__file__).resolve().parents[2] / "run_scripts"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="The checkpoint to evaluate.")
    parser.add_argument("--output", default="outputs/benchmarks/finetune_recipes", help="Writes OUTPUT.md/.json.")
    parser.add_argument("--work_dir", default="outputs/finetune_recipes", help="Each run's output_dir below it.")
    parser.add_argument("--dataset_name", default="fashion_mnist")
    parser.add_argument("--train_dir", default=None, help="An image folder instead of --dataset_name.")
    parser.add_argument("--validation_dir", default=None)
    parser.add_argument("--max_train_samples", type=int, default=4000)
    parser.add_argument("--max_eval_samples", type=int, default=2000, help="Test images (Fashion-MNIST has 10,000).")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--warmup_epochs", type=float, default=1)
    parser.add_argument("--total_batch_size", type=int, default=128)
    parser.add_argument("--probe_epochs", type=int, default=10)
    parser.add_argument("--probe_warmup_epochs", type=int, default=1)
    parser.add_argument("--probe_batch_size", type=int, default=256)
    parser.add_argument("--dataloader_num_workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Protocol name -> the script's argv (without the interpreter), each with its own output_dir under work_dir."""
    data = ["--model_name_or_path", args.model_name_or_path, "--seed", str(args.seed)]
    if args.train_dir is not None:
        data += ["--train_dir", args.train_dir] + (
            ["--validation_dir", args.validation_dir] if args.validation_dir else []
        )
    else:
        data += ["--dataset_name", args.dataset_name]
    data += ["--max_train_samples", str(args.max_train_samples)]
    if args.max_eval_samples is not None:
        data += ["--max_eval_samples", str(args.max_eval_samples)]
    finetune = [str(RUN_SCRIPTS / "run_finetune.py"), *data, "--num_train_epochs", f"{args.epochs:g}"]
    finetune += ["--per_device_eval_batch_size", "512", "--dataloader_num_workers", str(args.dataloader_num_workers)]
    finetune += ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--use_cpu"]
    mae_style = ["--total_batch_size", str(args.total_batch_size), "--warmup_epochs", f"{args.warmup_epochs:g}"]
    probe = [str(RUN_SCRIPTS / "run_linear_probe.py"), *data, "--device", "cpu"]
    probe += ["--epochs", str(args.probe_epochs), "--warmup_epochs", str(args.probe_warmup_epochs)]
    probe += ["--batch_size", str(args.probe_batch_size), "--feature_batch_size", "512"]
    probe += ["--num_workers", str(args.dataloader_num_workers)]
    work = Path(args.work_dir)
    return {
        "finetune mae": [*finetune, "--recipe", "mae", *mae_style, "--output_dir", str(work / "ft_mae")],
        "finetune gpa_released": [
            *finetune,
            "--recipe",
            "gpa_released",
            *mae_style,
            "--output_dir",
            str(work / "ft_gpa_released"),
        ],
        "finetune plain": [*finetune, "--recipe", "plain", "--output_dir", str(work / "ft_plain")],
        **{
            f"linear probe {optimizer} {augment}": [
                *probe,
                "--optimizer",
                optimizer,
                "--augment",
                augment,
                "--output_dir",
                str(work / ("lp_" + augment if optimizer == "lars" else f"lp_{optimizer}_{augment}")),
            ]
            for optimizer in ("lars", "sgd")
            for augment in ("rrc", "none")
        },
    }


def output_dir_of(command: list[str]) -> Path:
    return Path(command[command.index("--output_dir") + 1])


def run_all(commands: dict[str, list[str]]) -> dict[str, dict]:
    """Runs each command (the interpreter of this process) and reads its results.json; adds ``seconds``.

    A run whose output_dir already holds the results of the same command is not run again (an interrupted
    benchmark keeps what it finished): ``benchmark_run.json`` there records the command and its seconds.
    """
    results = {}
    for name, command in commands.items():
        output_dir = output_dir_of(command)
        record = output_dir / "benchmark_run.json"
        done = json.loads(record.read_text()) if record.exists() else {}
        if done.get("command") != command or not (output_dir / "results.json").exists():
            print(f"[{name}] {shlex.join(command)}", flush=True)
            start = time.perf_counter()
            subprocess.run([sys.executable, *command], check=True)
            done = {"command": command, "seconds": round(time.perf_counter() - start, 1)}
            record.write_text(json.dumps(done) + "\n")
        else:
            print(f"[{name}] finished before: {output_dir}", flush=True)
        results[name] = json.loads((output_dir / "results.json").read_text())
        results[name]["seconds"] = done["seconds"]
    return results


def row(name: str, result: dict) -> str:
    """One markdown table row: protocol, settings, top-1, top-5, best top-1 (fine-tuning), time."""
    if name.startswith("finetune"):
        recipe = result["recipe"]
        settings = (
            f"batch {result['total_batch_size']}, lr {result['learning_rate']:.3g}, layer decay "
            f"{recipe['layer_decay']}, drop path {recipe['drop_path']}, {recipe['pooling']} pooling, "
            f"{'RandAugment + erasing ' + str(recipe['reprob']) if recipe['auto_augment'] else 'crop + flip'}, "
            f"mixup/cutmix {recipe['mixup']}/{recipe['cutmix']}, smoothing {recipe['label_smoothing']}, "
            f"clip {result['max_grad_norm'] or 'none'}, {result['epochs']:g} epochs"
        )
        best = f"{100 * result['best_top1_accuracy']:.2f} (epoch {result['best_epoch']:g})"
    else:
        crops = "new crop + flip each epoch" if result["augment"] == "rrc" else "cached eval-crop features"
        settings = (
            f"{result['optimizer'].upper()}, batch {result['batch_size']}, lr {result['lr']:.3g}, "
            f"{result['epochs']} epochs, {result['pooling']} token, {crops}"
        )
        best = "–"
    top1, top5 = 100 * result["top1_accuracy"], 100 * result["top5_accuracy"]
    return f"| {name} | {settings} | {top1:.2f} | {top5:.2f} | {best} | {result['seconds']:.0f} |"


def markdown(results: dict[str, dict], command: str, header: dict) -> str:
    """The results table with the command, date, machine and versions that produced it."""
    lines = [
        "# Evaluation protocols on one checkpoint: fine-tuning recipes and the linear probe",
        "",
        f"Command: `{command}`  ",
        f"Date: {header['date']}; machine: {header['machine']}; versions: {header['versions']}.",
        "",
        f"Checkpoint: `{header['model_name_or_path']}`; {header['num_train']} training and {header['num_eval']} test "
        "images, seed " + str(header["seed"]) + ". Top-1 / top-5 in % on the test images after the last epoch.",
        "",
        "| protocol | settings | top-1 | top-5 | best top-1 | seconds |",
        "|---|---|---|---|---|---|",
        *(row(name, result) for name, result in results.items()),
        "",
    ]
    return "\n".join(lines)


def versions() -> str:
    import timm
    import torch
    import transformers

    return f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, " + (
        f"transformers {transformers.__version__}"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    commands = run_commands(args)
    results = run_all(commands)
    first = next(iter(results.values()))
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, no GPU",
        "versions": versions(),
        "model_name_or_path": args.model_name_or_path,
        "num_train": first["num_train"],
        "num_eval": first["num_eval"],
        "seed": args.seed,
    }
    command = shlex.join(
        ["python", "benchmarks/benchmark_finetune_recipes.py", *(sys.argv[1:] if argv is None else argv)]
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # The scripts' paths relative to the checkout, so the record reads the same on every machine.
    root = str(RUN_SCRIPTS.parent) + os.sep
    recorded = {name: shlex.join(["python", *command]).replace(root, "") for name, command in commands.items()}
    report = {"command": command, **header, "commands": recorded}
    report["results"] = results
    output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(results, command, header))
    print(output.with_suffix(".md").read_text())
    return report
