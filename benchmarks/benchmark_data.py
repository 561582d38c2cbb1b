#!/usr/bin/env python
"""Does the start of a pretraining run grow with the dataset? Image folders, parquet and webdataset shards, map-style
and streamed: time to the first step, peak memory, one DataLoader worker's rate; see `benchmarks.measuring.data`.

    python benchmarks/benchmark_data.py --quick                       # about a minute
    python benchmarks/benchmark_data.py --output benchmarks/data_cpu  # 2k, 20k and 200k images

Writes ``<output>.json`` and ``<output>.md`` (default ``outputs/benchmarks/data_cpu``). The images and shards it
writes, and each measurement as it finishes, stay in ``--work_dir``: run it again to resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.data import FORMATS, Settings, quick_settings, run, save  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="500 and 2,000 images as parquet shards: about a minute.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000, 200_000], help="Image counts.")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--worker_images", type=int, default=2_048, help="Tiny images through one worker.")
    parser.add_argument("--photo_images", type=int, default=512, help="ImageNet-like images through one worker.")
    parser.add_argument("--work_dir", default=None, help="Images, shards, runs (default outputs/benchmarks/data_work).")
    parser.add_argument(
        "--output", default=None, help="Output path without suffix (default outputs/benchmarks/data_cpu)."
    )
    args = parser.parse_args(argv)
    if min(args.sizes) < 128:
        parser.error("--sizes must be at least 128 images (two batches through one worker, and then some).")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work_dir = args.work_dir or ("outputs/benchmarks/data_quick" if args.quick else "outputs/benchmarks/data_work")
    if args.quick:
        settings = quick_settings(work_dir)
    else:
        settings = Settings(
            sizes=tuple(args.sizes),
            formats=tuple(args.formats),
            work_dir=work_dir,
            worker_images=args.worker_images,
            photo_images=args.photo_images,
        )
    results = run(settings, sys.argv[1:] if argv is None else argv)
    paths = save(results, args.output or f"outputs/benchmarks/data_{'quick' if args.quick else 'cpu'}")
    print(Path(paths[1]).read_text())
    print(f"wrote {paths[0]} and {paths[1]}")
    return results


if __name__ == "__main__":
    main()
