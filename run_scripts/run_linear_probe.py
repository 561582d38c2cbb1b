#!/usr/bin/env python
"""Linear-probe accuracy of a frozen GPA, ViTMAE, ViT or Swin encoder by MAE's protocol (``main_linprobe.py``).

    python run_scripts/run_linear_probe.py --model_name_or_path outputs/gpa --dataset_name fashion_mnist \\
        --output_dir outputs/linprobe

``BatchNorm1d(affine=False) + Linear`` (weights trunc_normal, std 0.01) on the frozen encoder's CLS token (after its
final norm; ``--pooling mean`` for the patches' mean), trained for 90 epochs (10 of warm-up, cosine after) of batch
16384 (all images when fewer) at lr = blr x batch / 256 with blr 0.1 (lr 6.4), no weight decay, with timm's LARS
(``--optimizer sgd``: SGD, as the GPA release's probe; its momentum 0.9, batch and lr are ours, MAE's, since the
release documents none). ``--augment rrc`` (the default, MAE's): every
epoch draws a new RandomResizedCrop (scale 0.08-1, bicubic; MAE's ``util/crop.py`` box: one draw, clamped to the
image) and flip of each training image and passes it through the encoder, up to ``--feature_batch_size`` images at
a time, the batch's features gathered before each step. ``--augment none``: features computed once on the
evaluation crop, much faster, not MAE's protocol. Evaluation: MAE's view (Resize(256 / 224 x size),
CenterCrop(size)), top-1 and top-5. Writes ``<output_dir>/results.json`` and prints a one-line summary.
"""

from __future__ import annotations

import argparse

from modeling_gpa.command_line import exit_on_bad_input
from modeling_gpa.data import with_pixel_values
from modeling_gpa.data.pipeline import TrainCrop
from modeling_gpa.evaluation import (
    AUGMENTATIONS,
    MAE_LINEAR_PROBE,
    OPTIMIZERS,
    add_frozen_encoder_arguments,
    check_features,
    check_pooling,
    labelled_features,
    load_encoder,
    load_labelled_splits,
    probe_metrics,
    report_results,
    train_augmented_linear_probe,
    train_linear_probe,
)
from modeling_gpa.evaluation.features import is_swin


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--augment", choices=AUGMENTATIONS, default="rrc", help="rrc: MAE's; none: cached features.")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=MAE_LINEAR_PROBE["optimizer"])
    parser.add_argument("--epochs", type=int, default=MAE_LINEAR_PROBE["epochs"])
    parser.add_argument("--warmup_epochs", type=int, default=MAE_LINEAR_PROBE["warmup_epochs"])
    parser.add_argument("--batch_size", type=int, default=MAE_LINEAR_PROBE["batch_size"], help="Images per step.")
    parser.add_argument(
        "--feature_batch_size", type=int, default=256, help="Images through the frozen encoder at once."
    )
    parser.add_argument("--blr", type=float, default=MAE_LINEAR_PROBE["blr"], help="lr = blr * batch_size / 256.")
    parser.add_argument("--lr", type=float, default=None, help="Absolute lr (overrides --blr).")
    parser.add_argument("--min_lr", type=float, default=MAE_LINEAR_PROBE["min_lr"])
    parser.add_argument("--weight_decay", type=float, default=MAE_LINEAR_PROBE["weight_decay"])
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers drawing the crops.")
    add_frozen_encoder_arguments(parser)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.feature_batch_size < 1:
        parser.error("--epochs, --batch_size and --feature_batch_size must be positive.")
    if not 0 <= args.warmup_epochs <= args.epochs:
        parser.error("--warmup_epochs must be in [0, --epochs].")
    if (args.lr if args.lr is not None else args.blr) <= 0:
        parser.error("the learning rate (--lr or --blr) must be positive.")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    encoder = load_encoder(args.model_name_or_path, args.trust_remote_code)
    check_pooling(encoder, args.pooling)
    config = encoder.config
    data = load_labelled_splits(args, config.image_size, config.num_channels, args.model_name_or_path)
    unreadable: set[str] = set()
    eval_features, eval_labels = labelled_features(
        encoder, data["eval"], args.pooling, args.feature_batch_size, args.device, data["normalizer"], unreadable
    )
    # A split smaller than the batch trains on full batches; the lr follows the batch actually used (MAE's rule).
    num_train = len(data["splits"]["train"])
    batch_size = min(args.batch_size, num_train)
    lr = args.lr if args.lr is not None else args.blr * batch_size / 256
    schedule = dict(
        epochs=args.epochs,
        lr=lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        min_lr=args.min_lr,
        seed=args.seed,
        device=args.device,
    )
    if args.augment == "rrc":
        crop = TrainCrop(config.image_size, config.num_channels, scale=MAE_LINEAR_PROBE["crop_scale"], one_draw=True)
        probe = train_augmented_linear_probe(
            encoder,
            with_crop(data, crop),
            data["num_classes"],
            pooling=args.pooling,
            batch_size=batch_size,
            feature_batch_size=args.feature_batch_size,
            normalizer=data["normalizer"],
            num_workers=args.num_workers,
            unreadable=unreadable,
            **schedule,
        )
    else:
        train_features, train_labels = labelled_features(
            encoder, data["train"], args.pooling, args.feature_batch_size, args.device, data["normalizer"], unreadable
        )
        check_features(train_features, eval_features)
        probe = train_linear_probe(train_features, train_labels, data["num_classes"], batch_size=batch_size, **schedule)
    metrics = probe_metrics(probe, eval_features, eval_labels)
    results = {
        **metrics,
        "model_name_or_path": args.model_name_or_path,
        "augment": args.augment,
        "pooling": args.pooling,
        "optimizer": args.optimizer,
        "epochs": args.epochs,
        "warmup_epochs": args.warmup_epochs,
        "lr": lr,
        "blr": lr * 256 / batch_size,
        "batch_size": batch_size,
        "encoder": "swin" if is_swin(config) else "vit",
        "num_train": num_train,
        "num_eval": len(eval_labels),
        "num_classes": data["num_classes"],
        "unreadable_images": len(unreadable),
    }
    summary = (
        f"linear probe ({args.optimizer}, augment {args.augment}, {args.epochs} epochs, pooling={args.pooling}): "
        f"top-1 {metrics['top1_accuracy']:.4f} top-5 {metrics['top5_accuracy']:.4f}"
    )
    return report_results(results, args.output_dir, summary)


def with_crop(data: dict, crop: TrainCrop):
    """The training split read through ``crop`` (a new random crop at every read)."""
    return with_pixel_values(data["splits"]["train"], crop, data["image_column"], data["label_column"])


if __name__ == "__main__":
    exit_on_bad_input(main)
