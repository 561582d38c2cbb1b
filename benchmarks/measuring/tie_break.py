"""Does breaking few-shot recall ties by average precision choose heads that rank objects better on held-out images?

    python benchmarks/benchmark_tie_break.py --checkpoints outputs/gpa-fashion-mnist --include_random_init \\
        --draws 50 --num_heldout 2000 --output benchmarks/fashion_mnist_tie_break

For each checkpoint (GPA, ViTMAE or ViT; the teacher is scored), ``--draws`` few-shot selections, each on 10 (or
``--num_images``) Fashion-MNIST training images drawn with seed 0, 1, ..., with the garment's pixels as the object.
Each selection has a choice with the tie-break (highest recall, then highest average precision) and the choice
without it (the first at the highest recall in block, head order). Both are measured on the same ``--num_heldout``
test images: object recall of the top-k GPA patches and average precision of the object patches in the GPA ranking.
``--include_random_init`` adds the first checkpoint's architecture at its random initialisation (seed 0): what a
``self`` teacher's selection sees before training. Writes ``<output>.md`` and ``<output>.json``; trains nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForPreTraining, set_seed

from modeling_gpa.data import load_image_datasets
from modeling_gpa.data.ground_truth import annotated_model_inputs
from modeling_gpa.data.image_inputs import ImageSettings
from modeling_gpa.head_selection import (
    candidate_name,
    load_scoring_model,
    num_masked_patches,
    object_ranking_tables,
    select_attention_head,
    teacher_encoder_of,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", required=True, help="Checkpoint directories to score.")
    parser.add_argument("--include_random_init", action="store_true", help="Also the first one at random init.")
    parser.add_argument("--draws", type=int, default=50, help="Selections per checkpoint, each on new images.")
    parser.add_argument("--num_images", type=int, default=10, help="Selection images per draw (default 10).")
    parser.add_argument("--num_heldout", type=int, default=2000, help="Held-out test images (default 2000).")
    parser.add_argument("--output", required=True, help="Writes OUTPUT.md and OUTPUT.json.")
    return parser.parse_args(argv)


def random_init_model(checkpoint: str) -> torch.nn.Module:
    """``checkpoint``'s architecture with fresh weights (seed 0), as a ``self`` teacher is before training."""
    set_seed(0)
    return AutoModelForPreTraining.from_config(AutoConfig.from_pretrained(checkpoint)).eval()


def heldout_tables(model, images, image_column: str, settings: ImageSettings, count: int) -> dict:
    """Recall and average precision of every candidate on ``count`` test images, plus chance and ceiling."""
    encoder = teacher_encoder_of(model)
    pixel_values, objects = annotated_model_inputs(
        count, settings, encoder.config.patch_size, dataset=images, image_column=image_column, seed=0
    )
    num_masked = num_masked_patches(objects.shape[1], getattr(model.config, "mask_ratio", 0.75))
    recall, precision = object_ranking_tables(encoder, pixel_values, objects, num_masked=num_masked)
    return {"recall": recall, "average_precision": precision, "chance": float(objects.float().mean())}


def compare(model, name: str, splits: dict, image_column: str, settings: ImageSettings, args) -> dict:
    """Every draw's two choices and their held-out numbers, and the means over the draws where they differ."""
    heldout = heldout_tables(model, splits["validation"], image_column, settings, args.num_heldout)
    patch_size = teacher_encoder_of(model).config.patch_size
    num_heads = heldout["recall"].shape[1] - 1

    def measured(layer: int, head: int | None) -> dict:
        column = num_heads if head is None else head
        return {
            "block_head": candidate_name(layer, head),
            "recall": float(heldout["recall"][layer, column]),
            "average_precision": float(heldout["average_precision"][layer, column]),
        }

    draws = []
    for seed in range(args.draws):
        pixel_values, objects = annotated_model_inputs(
            args.num_images, settings, patch_size, dataset=splits["train"], image_column=image_column, seed=seed
        )
        selection = select_attention_head(model, pixel_values, objects)
        draws.append(
            {
                "seed": seed,
                "num_tied_best": selection.num_tied_best,
                "changed": selection.tie_break_changed_choice,
                "tie_break": measured(selection.best_layer, selection.best_head),
                "order": measured(selection.order_layer, selection.order_head),
            }
        )
    changed = [draw for draw in draws if draw["changed"]]
    summary = {"checkpoint": name, "draws": len(draws), "chance": heldout["chance"]}
    summary["tied"] = sum(draw["num_tied_best"] > 1 for draw in draws)
    summary["changed"] = len(changed)
    for choice in ("tie_break", "order"):
        for metric in ("recall", "average_precision"):
            values = [draw[choice][metric] for draw in draws]
            summary[f"{choice}_{metric}_all"] = float(np.mean(values))
            if changed:
                summary[f"{choice}_{metric}_changed"] = float(np.mean([draw[choice][metric] for draw in changed]))
    summary["tie_break_better_ap"] = sum(
        draw["tie_break"]["average_precision"] > draw["order"]["average_precision"] for draw in changed
    )
    summary["tie_break_better_recall"] = sum(draw["tie_break"]["recall"] > draw["order"]["recall"] for draw in changed)
    return {"summary": summary, "draws": draws}


def percent_pair(summary: dict, metric: str, subset: str) -> str:
    """'tie-break / order' held-out means in %, or '–' when no draw of ``subset`` exists."""
    key = f"tie_break_{metric}_{subset}"
    if key not in summary:
        return "–"
    return f"{summary[key] * 100:.1f} / {summary[f'order_{metric}_{subset}'] * 100:.1f}"


def markdown(results: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Few-shot selection: the average-precision tie-break against block, head order, on held-out images",
        "",
        f"Written by `{command}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d}.",
        "",
        f"Per checkpoint, {args.draws} selections on {args.num_images} Fashion-MNIST training images each (seeds 0 to "
        f"{args.draws - 1}), the garment's pixels as ground truth; both choices of every selection are measured on "
        f"the same {args.num_heldout} test images. *Recall*: share of the top-k GPA patches on the garment (k = the "
        "masked count); *AP*: average precision of the garment's patches in the GPA ranking. Held-out means in %, "
        "over all draws and over the draws where the tie-break chose another head than block, head order would "
        "have; *better*: of those, how many times the tie-break's head has the higher held-out AP / recall.",
        "",
        "| checkpoint | chance | draws with a recall tie | choice changed | recall: tie-break / order (all) | "
        "AP: tie-break / order (all) | recall: tie-break / order (changed) | AP: tie-break / order (changed) | "
        "better AP / recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        s = result["summary"]
        pair = partial(percent_pair, s)
        lines.append(
            f"| {s['checkpoint']} | {s['chance'] * 100:.1f} | {s['tied']} of {s['draws']} | {s['changed']} | "
            f"{pair('recall', 'all')} | {pair('average_precision', 'all')} | {pair('recall', 'changed')} | "
            f"{pair('average_precision', 'changed')} | {s['tie_break_better_ap']} / {s['tie_break_better_recall']} |"
        )
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    splits, image_column = load_image_datasets(dataset_name="fashion_mnist")
    models = [(path, load_scoring_model(path)) for path in args.checkpoints]
    if args.include_random_init:
        models.append((f"{args.checkpoints[0]} at random init", random_init_model(args.checkpoints[0])))
    settings = ImageSettings.from_pretrained(args.checkpoints[0], models[0][1].config)
    results = [compare(model, name, splits, image_column, settings, args) for name, model in models]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/benchmark_tie_break.py", *(sys.argv[1:] if argv is None else argv)])
    output.with_suffix(".json").write_text(json.dumps({"command": command, "results": results}, indent=2))
    output.with_suffix(".md").write_text(markdown(results, args, command))
    for result in results:
        print(json.dumps(result["summary"]))
    return results


if __name__ == "__main__":
    main()
