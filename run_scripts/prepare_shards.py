#!/usr/bin/env python
"""Write an image folder as parquet (the Hub's layout) or webdataset shards, once, to stream it from then on.

    python run_scripts/prepare_shards.py --train_dir /data/imagenet/train --validation_dir /data/imagenet/val \\
        --output_dir /data/imagenet-shards --format parquet --num_shards 1024
    python run_scripts/run_pretrain.py --dataset_name /data/imagenet-shards --streaming ...

Files are shuffled (seeded) before they are split into shards, so a class-sorted folder gives shards of every class.
Pick --num_shards as a multiple of the number of processes that will stream them (each then reads whole shards), and
at least processes x DataLoader workers. The folder is listed once, here; memory stays that of one row group.
"""

from __future__ import annotations

import argparse
import sys

from modeling_gpa.data.shards import DEFAULT_IMAGES_PER_SHARD, SHARD_FORMATS, prepare_shards


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_dir", required=True, help="Image folder of the train split (class subfolders).")
    parser.add_argument("--validation_dir", help="Image folder of the validation split.")
    parser.add_argument("--output_dir", required=True, help="Where data/{split}-*-of-*.{parquet,tar} are written.")
    parser.add_argument("--format", choices=SHARD_FORMATS, default="parquet", help="Shard format.")
    parser.add_argument("--num_shards", type=int, help="Shards of the train split (default: by --images_per_shard).")
    parser.add_argument("--images_per_shard", type=int, default=DEFAULT_IMAGES_PER_SHARD, help="Images per shard.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the order of the files in the shards.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_arguments(argv)
    splits = [("train", args.train_dir, args.num_shards)]
    if args.validation_dir:
        splits.append(("validation", args.validation_dir, None))
    written = []
    try:
        for split, folder, num_shards in splits:
            paths = prepare_shards(
                folder, args.output_dir, split, args.format, num_shards, args.images_per_shard, args.seed
            )
            print(f"{split}: {len(paths)} {args.format} shards in {args.output_dir}/data")
            written += paths
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"prepare_shards.py: error: {error}")
    print(f"Stream them: python run_scripts/run_pretrain.py --dataset_name {args.output_dir} --streaming ...")
    return written


if __name__ == "__main__":
    main()
