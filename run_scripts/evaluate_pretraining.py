#!/usr/bin/env python
"""Did pretraining help? k-NN accuracy of a checkpoint's frozen encoder against the same encoder at random init.

    python run_scripts/evaluate_pretraining.py --model_name_or_path outputs/gpa-fashion-mnist \\
        --dataset_name fashion_mnist --max_train_samples 5000 --max_eval_samples 1000 \\
        --output_dir outputs/gpa-fashion-mnist/evaluation

Writes ``results.json`` and ``evaluation.png``: the training curves from ``trainer_state.json`` (when the checkpoint
has one) beside weighted k-NN top-1 accuracy (CLS and mean-pooled features) of the pretrained and the
random-initialised encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from transformers import AutoConfig, ViTMAEForPreTraining, set_seed  # noqa: E402

from modeling_gpa import GPAForPreTraining  # noqa: E402
from modeling_gpa.command_line import TRUST_REMOTE_CODE_HELP, check_checkpoint  # noqa: E402
from modeling_gpa.evaluation import (  # noqa: E402
    POOLINGS,
    add_dataset_arguments,
    knn_accuracy,
    labelled_features,
    load_encoder,
    load_labelled_splits,
    write_results,
)

CURVES = ("loss", "pixel_loss", "gpa_loss", "hpm_loss")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", required=True, help="GPA or ViTMAE checkpoint directory.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--trust_remote_code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    add_dataset_arguments(parser)
    return parser.parse_args(argv)


def random_init_checkpoint(model_name_or_path: str, directory: str, seed: int, trust_remote_code: bool = False) -> str:
    """Saves the checkpoint's architecture with fresh weights (seeded) and returns its path."""
    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    set_seed(seed)
    if config.model_type == "gpa":
        # The reference is the encoder alone: a self teacher needs no checkpoint of its own.
        config.gpa_teacher, config.gpa_teacher_name_or_path = "self", None
        model = GPAForPreTraining(config)
    elif config.model_type == "vit_mae":
        model = ViTMAEForPreTraining(config)
    else:
        raise ValueError(f"{model_name_or_path!r} is a {config.model_type!r} checkpoint; pass a GPA or ViTMAE one.")
    model.save_pretrained(directory)
    return directory


def knn_of(
    encoder_path: str, data: dict, args: argparse.Namespace, unreadable: set[str] | None = None
) -> dict[str, float]:
    """Top-1 weighted k-NN accuracy of one frozen encoder, per pooling; unreadable images' names go to
    ``unreadable``."""
    encoder = load_encoder(encoder_path, args.trust_remote_code)
    accuracies = {}
    for pooling in POOLINGS:
        normalizer = data["normalizer"]
        train = labelled_features(encoder, data["train"], pooling, args.batch_size, args.device, normalizer, unreadable)
        query = labelled_features(encoder, data["eval"], pooling, args.batch_size, args.device, normalizer, unreadable)
        metrics = knn_accuracy(*train, *query, data["num_classes"], args.k, args.temperature)
        accuracies[pooling] = metrics["top1_accuracy"]
    return accuracies


def training_curves(model_name_or_path: str) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` of the logged training losses, empty without ``trainer_state.json``."""
    path = Path(model_name_or_path) / "trainer_state.json"
    if not path.is_file():
        return {}
    history = json.loads(path.read_text())["log_history"]
    return {
        name: [(entry["step"], entry[name]) for entry in history if name in entry and "eval_loss" not in entry]
        for name in CURVES
        if any(name in entry for entry in history)
    }


def plot(curves: dict, accuracies: dict, title: str) -> plt.Figure:
    """Training curves (left) and k-NN accuracy of pretrained against random-init encoders (right)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in curves.items():
        steps, values = zip(*points, strict=True)
        left.plot(steps, values, label=name)
    left.set(title="training losses", xlabel="step", ylabel="loss")
    if curves:
        left.legend()
    else:
        left.text(0.5, 0.5, "no trainer_state.json", ha="center", va="center", transform=left.transAxes)
    width = 0.38
    for offset, (encoder, colour) in zip(
        (-width / 2, width / 2), (("pretrained", "C0"), ("random init", "C7")), strict=True
    ):
        values = [100 * accuracies[encoder][pooling] for pooling in POOLINGS]
        bars = right.bar([i + offset for i in range(len(POOLINGS))], values, width, label=encoder, color=colour)
        right.bar_label(bars, fmt="%.1f")
    right.set_xticks(range(len(POOLINGS)), [f"{pooling} features" for pooling in POOLINGS])
    right.set(title="weighted k-NN top-1 accuracy (%)", ylim=(0, 100))
    right.legend(loc="upper left")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    check_checkpoint(args.model_name_or_path, args.trust_remote_code)
    encoder_config = AutoConfig.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    data = load_labelled_splits(
        args, encoder_config.image_size, encoder_config.num_channels, processor_path=args.model_name_or_path
    )
    unreadable: set[str] = set()
    with tempfile.TemporaryDirectory() as scratch:
        accuracies = {
            "pretrained": knn_of(args.model_name_or_path, data, args, unreadable),
            "random init": knn_of(
                random_init_checkpoint(args.model_name_or_path, scratch, args.seed, args.trust_remote_code), data, args
            ),
        }
    results = {
        "model_name_or_path": args.model_name_or_path,
        "knn_top1": accuracies,
        "k": args.k,
        "temperature": args.temperature,
        "num_train": len(data["train"]),
        "num_eval": len(data["eval"]),
        "unreadable_images": len(unreadable),
    }
    path = write_results(results, args.output_dir)
    name = os.path.basename(os.path.abspath(args.model_name_or_path))
    figure = plot(training_curves(args.model_name_or_path), accuracies, f"{name}: {len(data['eval'])} test images")
    figure_path = Path(args.output_dir) / "evaluation.png"
    figure.savefig(figure_path, dpi=120)
    pretrained, baseline = accuracies["pretrained"], accuracies["random init"]
    print(
        f"k-NN top-1 (k={args.k}): pretrained CLS {pretrained['cls']:.3f} / mean {pretrained['mean']:.3f}, "
        f"random init CLS {baseline['cls']:.3f} / mean {baseline['mean']:.3f} -> {path}, {figure_path}"
    )
    return results


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"evaluate_pretraining.py: error: {error}")
