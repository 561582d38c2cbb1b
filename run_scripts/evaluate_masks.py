#!/usr/bin/env python
"""Do a GPA checkpoint's masks find the object? Object recall on held-out annotated images, against chance and ceiling.

    python run_scripts/evaluate_masks.py --model_name_or_path outputs/gpa-fashion-mnist --dataset_name fashion_mnist \\
        --num_images 1000 --output_dir outputs/gpa-fashion-mnist/evaluation

For the checkpoint's configured teacher block and head, on ``--num_images`` images of ``--dataset_split`` (default
``validation``, Fashion-MNIST's test set: never trained on): the top-k recall and average precision of its GPA
ranking, the share of the end-of-schedule hard set on the object, and the share of the schedule's masks on the
object at progress 0, 0.5 and 1. Ground truth: the garment's pixels (``fashion_mnist``) or the ``object_mask``
column (``cluttered_fashion_mnist``). Writes ``mask_recall.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os

from modeling_gpa.command_line import TRUST_REMOTE_CODE_HELP, exit_on_bad_input
from modeling_gpa.data import load_image_datasets
from modeling_gpa.data.ground_truth import annotated_model_inputs
from modeling_gpa.data.image_inputs import ImageSettings
from modeling_gpa.evaluation.mask_recall import format_mask_recall, measure_mask_recall
from modeling_gpa.head_selection import load_scoring_model, teacher_encoder_of


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="GPA checkpoint directory.")
    parser.add_argument("--dataset_name", default="fashion_mnist", help="fashion_mnist or cluttered_fashion_mnist.")
    parser.add_argument("--dataset_split", default="validation", help="Split to measure on (default validation).")
    parser.add_argument("--num_images", type=int, default=1000, help="Held-out images (default 1000).")
    parser.add_argument("--min_object_fraction", type=float, default=0.5, help="Object share for an object patch.")
    parser.add_argument("--seed", type=int, default=0, help="Which images are drawn, and the masks' random draws.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--trust_remote_code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    model = load_scoring_model(args.model_name_or_path, args.trust_remote_code)
    if not hasattr(model, "compute_gpa"):
        raise ValueError(f"{args.model_name_or_path!r} is not a GPA checkpoint; pass one written by run_pretrain.py.")
    splits, image_column = load_image_datasets(dataset_name=args.dataset_name)
    if args.dataset_split not in splits:
        raise ValueError(f"--dataset_split {args.dataset_split!r} does not exist; choose one of {sorted(splits)}.")
    pixel_values, objects = annotated_model_inputs(
        args.num_images,
        ImageSettings.from_pretrained(args.model_name_or_path, model.config),
        teacher_encoder_of(model).config.patch_size,
        dataset=splits[args.dataset_split],
        image_column=image_column,
        min_object_fraction=args.min_object_fraction,
        seed=args.seed,
    )
    report = measure_mask_recall(model, pixel_values, objects, seed=args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    result = {"model_name_or_path": args.model_name_or_path, "split": args.dataset_split, **report.to_dict()}
    with open(os.path.join(args.output_dir, "mask_recall.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(format_mask_recall(report))
    return result


def main(argv: list[str] | None = None) -> None:
    exit_on_bad_input(run, parse_args(argv))


if __name__ == "__main__":
    main()
