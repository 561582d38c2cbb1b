#!/usr/bin/env python
"""Linear-probe accuracy of a frozen encoder (MAE's recipe) on any GPA, ViTMAE, ViT or Swin checkpoint.

    python run_scripts/run_linear_probe.py --model_name_or_path outputs/gpa --dataset_name fashion_mnist \\
        --output_dir outputs/linprobe --pooling cls --optimizer lars

Features are computed once (frozen encoder, no augmentation), then ``BatchNorm1d(affine=False) + Linear`` is trained
with LARS or SGD (momentum 0.9), cosine schedule with warm-up. Learning rate: ``--lr``, else ``blr * batch_size / 256``;
without either, LARS uses MAE's effective rate 6.4 (blr 0.1 at its batch 16384: LARS's trust ratio makes the step
size independent of the batch size) and SGD uses blr 0.1.
Writes ``<output_dir>/results.json`` and prints a one-line summary.
"""

from __future__ import annotations

import argparse

from modeling_gpa.command_line import exit_on_bad_input
from modeling_gpa.evaluation import (
    MAE_LARS_LR,
    OPTIMIZERS,
    add_frozen_encoder_arguments,
    frozen_encoder_features,
    linear_probe_accuracy,
    report_results,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="lars")
    parser.add_argument("--epochs", type=int, default=90)
    parser.add_argument("--warmup_epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=256, help="Probe batch size (also feature extraction).")
    parser.add_argument("--blr", type=float, default=None, help="Base lr: lr = blr * batch_size / 256.")
    parser.add_argument("--lr", type=float, default=None, help="Absolute lr (overrides --blr).")
    parser.add_argument("--weight_decay", type=float, default=0.0)
    add_frozen_encoder_arguments(parser)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or not 0 <= args.warmup_epochs <= args.epochs:
        parser.error("--epochs and --batch_size must be positive, and 0 <= --warmup_epochs <= --epochs.")
    if args.lr is None:
        if args.blr is not None:
            args.lr = args.blr * args.batch_size / 256
        else:
            args.lr = MAE_LARS_LR if args.optimizer == "lars" else 0.1 * args.batch_size / 256
    if args.lr <= 0:
        parser.error(f"the learning rate must be positive; got {args.lr}.")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    data = frozen_encoder_features(args)
    (train_features, train_labels), (eval_features, eval_labels) = data["train"], data["eval"]
    metrics = linear_probe_accuracy(
        train_features,
        train_labels,
        eval_features,
        eval_labels,
        data["num_classes"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        device=args.device,
    )
    results = {
        **metrics,
        "model_name_or_path": args.model_name_or_path,
        "pooling": args.pooling,
        "optimizer": args.optimizer,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "num_train": len(train_labels),
        "num_eval": len(eval_labels),
        "num_classes": data["num_classes"],
        "unreadable_images": data["unreadable_images"],
    }
    summary = f"linear probe ({args.optimizer}, {args.epochs} epochs, pooling={args.pooling}): accuracy "
    return report_results(results, args.output_dir, summary + f"{metrics['accuracy']:.4f}")


if __name__ == "__main__":
    exit_on_bad_input(main)
