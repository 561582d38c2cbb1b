"""What the evaluation scripts share: dataset and encoder arguments, labelled splits, features, results files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import SwinModel, ViTModel

from ..command_line import TRUST_REMOTE_CODE_HELP
from ..data.columns import named_column
from ..data.folder_checks import check_image_folders
from ..data.pipeline import PixelNormalizer, collate_pixel_values_and_labels
from .features import POOLINGS, check_pooling, extract_features, load_encoder


def write_results(results: dict, output_dir: str | os.PathLike) -> Path:
    """Writes ``results`` as ``<output_dir>/results.json`` and returns the path."""
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def report_results(results: dict, output_dir: str | os.PathLike, summary: str) -> dict:
    """Writes ``results.json``, prints ``summary (N eval / M train images) -> path`` and returns ``results``."""
    path = write_results(results, output_dir)
    print(f"{summary} ({results['num_eval']} eval / {results['num_train']} train images) -> {path}")
    return results


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
    if (column := named_column(columns, label_column_name, ("label", "labels"), "label")) is not None:
        return column
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
    # `data.sources` imports `datasets`, which the GPU benchmark machines lack: the rest of evaluation imports there.
    from ..data.sources import (
        build_image_processor,
        load_image_datasets_of,
        transforms_from_processor,
        with_pixel_values,
    )

    check_image_folders(args, labels=True)
    splits, image_column = load_image_datasets_of(args, args.cache_dir, args.seed)
    label_column = find_label_column(splits["train"], args.label_column_name)
    find_label_column(splits["validation"], label_column)
    for split, flag in (("train", "--max_train_samples"), ("validation", "--max_eval_samples")):
        limit = getattr(args, flag[2:])
        if limit is not None:
            splits[split] = splits[split].shuffle(seed=args.seed).select(range(max(0, min(limit, len(splits[split])))))
        if len(splits[split]) == 0:
            cause = f" after {flag} {limit}" if limit is not None else ""
            raise ValueError(
                f"the {split} split has no images{cause}: pass {flag} 1 or more, or check --train_dir, "
                "--validation_dir or --dataset_name"
            )
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

    # Its preprocessor_config.json may name a processor class of its own: that code is never run here.
    return AutoImageProcessor.from_pretrained(path, trust_remote_code=False)


def labelled_features(
    encoder: ViTModel | SwinModel,
    dataset,
    pooling: str,
    batch_size: int,
    device: str,
    normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    unreadable: set[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder (N, D) features and (N,) labels of a ``{"pixel_values", "labels"}`` dataset.

    ``normalizer`` turns uint8 pixels into model inputs on ``device`` (``load_labelled_splits(...)["normalizer"]``);
    the names of unreadable images, replaced by the next readable one, are added to ``unreadable`` when given.
    """
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset, batch_size=batch_size, collate_fn=collate_pixel_values_and_labels, pin_memory=device != "cpu"
    )
    return extract_features(
        encoder, loader, pooling=pooling, device=device, normalizer=normalizer, unreadable=unreadable
    )


def add_frozen_encoder_arguments(parser) -> None:
    """The flags run_knn.py and run_linear_probe.py share: checkpoint, output, pooling, device, seed and dataset."""
    parser.add_argument("--model_name_or_path", required=True, help="GPA, ViTMAE, ViT or Swin checkpoint directory.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--pooling", choices=POOLINGS, default="cls")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--trust_remote_code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    add_dataset_arguments(parser)


def frozen_encoder_features(args) -> dict:
    """Features of the frozen encoder of ``args.model_name_or_path`` on the train and eval splits of ``args``.

    Returns:
        dict with ``train`` and ``eval`` as ((N, D) features, (N,) labels) pairs, ``num_classes`` and
        ``unreadable_images``: how many distinct images could not be decoded (each replaced by the next readable one).
    """
    encoder = load_encoder(args.model_name_or_path, args.trust_remote_code)
    check_pooling(encoder, args.pooling)
    data = load_labelled_splits(args, encoder.config.image_size, encoder.config.num_channels, args.model_name_or_path)
    unreadable: set[str] = set()
    features = {
        split: labelled_features(
            encoder, data[split], args.pooling, args.batch_size, args.device, data["normalizer"], unreadable
        )
        for split in ("train", "eval")
    }
    return features | {"num_classes": data["num_classes"], "unreadable_images": len(unreadable)}
