#!/usr/bin/env python
"""Is pretraining input-bound? The input pipeline alone, the training step alone (eager and compiled), and
run_pretrain.py end to end, over one image folder; see `benchmarks.measuring.pipeline`.

    python benchmarks/benchmark_pipeline.py --quick                     # CPU, about a minute
    python benchmarks/benchmark_pipeline.py --quick --output benchmarks/pipeline_cpu
    python benchmarks/benchmark_pipeline.py --model vit-b16 --device cuda --bf16 --batch_size 256 \\
        --workers 15 --num_images 8192 --output benchmarks/pipeline_h200

Writes ``<output>.json`` and ``<output>.md`` (default ``outputs/pipeline_<device>``). Without ``--image_dir`` it
writes ImageNet-like JPEGs (400-600 x 300-450 px, from scikit-image's photos) to ``outputs/pipeline_images``.
Needs torch, transformers, accelerate, Pillow and scikit-image; ``datasets`` for the float32 baseline and the
end-to-end part (run_pretrain.py loads image folders with it); torchvision only for GPU JPEG decoding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runs from a plain checkout too: the GPU machines have no install of this repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.pipeline import ARMS, MODELS, Settings, quick_settings, run, save  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU, 512 images, tiny model, a few steps: ~1 minute.")
    parser.add_argument("--image_dir", default="outputs/pipeline_images", help="Image folder (written if short).")
    parser.add_argument("--num_images", type=int, default=2048, help="Images to write when the folder has fewer.")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--model", choices=list(MODELS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU).")
    parser.add_argument("--step_iters", type=int, default=10, help="Timed training steps in (b).")
    parser.add_argument("--e2e_steps", type=int, default=30, help="Optimizer steps of each end-to-end run in (c).")
    parser.add_argument("--warmup_steps", type=int, default=5, help="End-to-end steps left out of the timing.")
    parser.add_argument("--no_compile", action="store_true", help="Eager only (skip torch.compile).")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--output", default=None, help="Output path without suffix (default outputs/pipeline_<dev>).")
    args = parser.parse_args(argv)
    if args.workers < 0 or args.batch_size < 1 or args.num_images < args.batch_size * 2:
        parser.error("--workers must be >= 0, --batch_size >= 1 and --num_images at least two batches.")
    if not 0 <= args.warmup_steps < args.e2e_steps - 1:
        parser.error("--warmup_steps must leave at least two timed steps of --e2e_steps.")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    command = sys.argv[1:] if argv is None else argv
    if args.quick:
        fields = quick_settings(args.image_dir)
    else:
        fields = dict(
            image_dir=args.image_dir,
            num_images=args.num_images,
            workers=args.workers,
            batch_size=args.batch_size,
            model=args.model,
            device=args.device,
            bf16=args.bf16,
            step_iters=args.step_iters,
            e2e_steps=args.e2e_steps,
            warmup_steps=args.warmup_steps,
        )
    output = args.output or f"outputs/pipeline_{fields['device'].split(':')[0]}"
    runs_dir = f"outputs/{Path(output).name}_runs"  # run_pretrain.py's scratch output, never beside the results
    settings = Settings(**fields, compile=not args.no_compile, arms=tuple(args.arms), output_dir=runs_dir)
    results = run(settings, command)
    paths = save(results, output)
    print(Path(paths[1]).read_text())
    print(f"wrote {paths[0]} and {paths[1]}")
    return results


if __name__ == "__main__":
    main()
