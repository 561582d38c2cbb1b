#!/usr/bin/env python
"""Weighted k-NN accuracy of a frozen encoder (DINO's protocol) on any GPA, ViTMAE, ViT or Swin checkpoint.

    python run_scripts/run_knn.py --model_name_or_path outputs/gpa --dataset_name fashion_mnist --output_dir outputs/knn

Each eval image votes with its ``k`` most cosine-similar train images, each vote weighted ``exp(sim / T)``.
Writes ``<output_dir>/results.json`` (top-1, top-5) and prints a one-line summary.
"""

from __future__ import annotations

import argparse

from modeling_gpa.command_line import exit_on_bad_input
from modeling_gpa.evaluation import add_frozen_encoder_arguments, frozen_encoder_features, knn_accuracy, report_results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--batch_size", type=int, default=256)
    add_frozen_encoder_arguments(parser)
    args = parser.parse_args(argv)
    if args.k < 1 or args.temperature <= 0 or args.batch_size < 1:
        parser.error(
            f"--k={args.k}, --temperature={args.temperature} and --batch_size={args.batch_size} must be positive."
        )
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    data = frozen_encoder_features(args)
    (train_features, train_labels), (eval_features, eval_labels) = data["train"], data["eval"]
    metrics = knn_accuracy(
        train_features, train_labels, eval_features, eval_labels, data["num_classes"], args.k, args.temperature
    )
    results = {
        **metrics,
        "model_name_or_path": args.model_name_or_path,
        "pooling": args.pooling,
        "k": args.k,
        "temperature": args.temperature,
        "num_train": len(train_labels),
        "num_eval": len(eval_labels),
        "num_classes": data["num_classes"],
        "unreadable_images": data["unreadable_images"],
    }
    top5 = next((f", top-5 {value:.4f}" for key, value in metrics.items() if key != "top1_accuracy"), "")
    summary = f"knn k={args.k} T={args.temperature} pooling={args.pooling}: top-1 {metrics['top1_accuracy']:.4f}{top5}"
    return report_results(results, args.output_dir, summary)


if __name__ == "__main__":
    exit_on_bad_input(main)
