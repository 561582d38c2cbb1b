"""Which heads of the benchmark's teachers find the garment: few-shot selection against a held-out check.

    python benchmarks/benchmark_teacher_heads.py --work_dir W --epochs 80 --output benchmarks/x

For every cached checkpoint of ``benchmark_fashion_mnist.py`` that serves as a teacher at that setting (the ``mae``
arm's, teacher of the pretrained-teacher arms; the ``random_init`` reference's, teacher of the control), per seed:
the few-shot choice on the benchmark's own 10 training images, and on ``--heldout`` test images the object recall
(share of a head's top-k GPA patches on the garment, k = 37 of 49) of that choice, of the last block's last head
(what ``gpa_pretrained_last`` and the control use) and of the best candidate, against chance (a random mask) and the
ceiling ``min(|garment|, k) / k`` that a head reaches by ranking every garment patch among its top k. Settings flags
are those of ``benchmark_fashion_mnist.py``. Writes ``<output>.md`` and ``<output>.json``; trains nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import transformers

from modeling_gpa.head_selection import HeadSelection, select_attention_head
from modeling_gpa.teacher import load_pretrained_teacher

from . import fashion_mnist as benchmark

TEACHERS = {"mae": "MAE checkpoint (pretrained-teacher arms)", "random_init": "random-init encoder (control)"}


def candidate_recall(selection: HeadSelection, layer: int, head: int | None) -> float:
    """Recall of block ``layer`` (negative counts from the end), head ``head`` (``None``: all heads summed)."""
    num_heads = selection.recall.shape[1] - 1
    column = num_heads if head is None else head % num_heads
    return float(selection.recall[layer, column])


def teacher_heads(checkpoint: Path, arrays: dict, patch_size: int, seed: int, num_heldout: int) -> dict:
    """Few-shot selection on the benchmark's 10 images of ``seed`` and the held-out recall table of one teacher."""
    teacher = load_pretrained_teacher(str(checkpoint))
    fewshot = benchmark.fewshot_head_selection(teacher, arrays, patch_size, seed)
    heldout = select_attention_head(
        teacher,
        arrays["test_x"][:num_heldout],
        benchmark.object_patches_of(arrays["test_mask"][:num_heldout], patch_size),
    )
    return {
        "seed": seed,
        "fewshot": {
            "layer": fewshot.best_layer,
            "head": fewshot.best_head,
            "recall": fewshot.best_recall,
            "chance": fewshot.object_coverage,
            "ceiling": fewshot.recall_ceiling,
            "num_tied_best": fewshot.num_tied_best,
        },
        "heldout": {
            "num_images": heldout.num_images,
            "fewshot_choice": candidate_recall(heldout, fewshot.best_layer, fewshot.best_head),
            "last_block_last_head": candidate_recall(heldout, -1, -1),
            "best": heldout.best_recall,
            "best_candidate": {"layer": heldout.best_layer, "head": heldout.best_head},
            "chance": heldout.object_coverage,
            "ceiling": heldout.recall_ceiling,
            "recall": heldout.to_dict()["recall"],
        },
    }


def markdown(rows: list[dict], command: str, settings: dict) -> str:
    def head(layer: int, head: int | None) -> str:
        return f"block {layer}, {'all heads' if head is None else f'head {head}'}"

    num_heldout = rows[0]["heldout"]["num_images"]
    lines = [
        "# Which teacher heads find the garment (cluttered Fashion-MNIST benchmark)",
        "",
        f"Written by `{command}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d} from the benchmark's cached "
        f"checkpoints; settings `{json.dumps(settings, sort_keys=True)}`.",
        "",
        "Object recall in %: the share of a head's top-k GPA patches (k = the patches MAE masks) that lie on the "
        "garment. *Chance*: a random mask's recall (the garment's patch share). *Ceiling*: the most any head can "
        "score, mean min(|garment|, k) / k, reached by ranking every garment patch among the top k. *Few-shot*: the "
        "choice on the benchmark's 10 selection images of that seed (ties go to the earlier block, then the lower "
        "head). "
        f"*Held-out*: {num_heldout} test images.",
        "",
        "| teacher | seed | few-shot choice | recall / chance / ceiling (10 images) | tied | held-out: choice | "
        "last block, last head | best | chance | ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        few, held = row["fewshot"], row["heldout"]
        lines.append(
            f"| {TEACHERS[row['teacher']]} | {row['seed']} | {head(few['layer'], few['head'])} | "
            f"{few['recall'] * 100:.1f} / {few['chance'] * 100:.1f} / {few['ceiling'] * 100:.1f} | "
            f"{few['num_tied_best']} | {held['fewshot_choice'] * 100:.1f} | {held['last_block_last_head'] * 100:.1f} | "
            f"{held['best'] * 100:.1f} | {held['chance'] * 100:.1f} | {held['ceiling'] * 100:.1f} |"
        )
    return "\n".join([*lines, ""])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", type=Path, required=True, help="The benchmark's --work_dir.")
    parser.add_argument("--dataset", choices=benchmark.DATASETS, default="cluttered")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--heldout", type=int, default=1000, help="Test images for the held-out table.")
    parser.add_argument("--output", type=Path, required=True, help="Prefix of the .md and .json it writes.")
    benchmark.add_settings_arguments(parser)
    args = parser.parse_args(argv)
    args.settings = benchmark.settings_from_args(args)
    if args.heldout < 1:
        parser.error(f"--heldout={args.heldout} must be at least 1.")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    settings = args.settings
    runs = [
        (name, seed, benchmark.run_dir(args.work_dir, settings, args.dataset, name, seed) / "checkpoint")
        for name in TEACHERS
        for seed in args.seeds
    ]
    runs = [run for run in runs if run[2].is_dir()]
    if not runs:
        sys.exit(
            f"error: no cached {args.dataset} mae or random_init checkpoints for seeds {args.seeds} at these settings "
            f"under {args.work_dir}; run benchmark_fashion_mnist.py with the same flags first."
        )
    arrays = benchmark.load_arrays(args.dataset, settings, args.work_dir)
    patch_size = benchmark.patch_size_for(args.dataset, settings)
    rows = [
        {"teacher": name, **teacher_heads(checkpoint, arrays, patch_size, seed, args.heldout)}
        for name, seed, checkpoint in runs
    ]
    flags = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/benchmark_teacher_heads.py", *flags])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fields = settings.for_dataset(args.dataset)
    args.output.with_suffix(".md").write_text(markdown(rows, command, fields))
    payload = {"command": command, "dataset": args.dataset, "settings": fields, "rows": rows}
    args.output.with_suffix(".json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    for row in rows:
        held = row["heldout"]
        print(
            f"{row['teacher']} seed {row['seed']}: held-out recall of the few-shot choice "
            f"{held['fewshot_choice']:.3f}, last head {held['last_block_last_head']:.3f} "
            f"(chance {held['chance']:.3f}, ceiling {held['ceiling']:.3f})"
        )
    print(f"wrote {args.output}.md and .json ({len(rows)} rows)")
    return rows


if __name__ == "__main__":
    main()
