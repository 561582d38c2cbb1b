#!/usr/bin/env python
"""SimMIM random vs GPA masks (frozen MAE teacher, few-shot block/head), ViT and Swin students, Fashion-MNIST.

    python benchmarks/simmim_transfer.py --work_dir outputs/simmim_transfer            # default size (CPU: hours)
    python benchmarks/simmim_transfer.py --work_dir outputs/simmim_quick --quick        # about a minute

Results per (dataset, student, arm, seed) are cached under --work_dir, so the same command resumes. The summary goes
to ``--output`` (``.md``, ``.json`` and a ``.png`` figure; default ``outputs/simmim_transfer``). See
``modeling_gpa.simmim_benchmark``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_gpa.simmim_benchmark import (  # noqa: E402
    DATASETS,
    QUICK,
    STUDENTS,
    Settings,
    figure,
    markdown,
    run,
    summarize,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/simmim_transfer_work"))
    parser.add_argument("--output", type=Path, default=Path("outputs/simmim_transfer"), help="Report prefix.")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--students", nargs="+", choices=STUDENTS, default=list(STUDENTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="Tiny models and data: a smoke test.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads.")
    for field in dataclasses.fields(Settings):
        parser.add_argument(f"--{field.name}", type=type(field.default), default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    values = dict(QUICK) if args.quick else {}
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if getattr(args, f.name)})
    settings = Settings(**values)
    results = run(args.work_dir, settings, tuple(args.datasets), tuple(args.students), tuple(args.seeds))
    summary = summarize(results)
    command = "python benchmarks/simmim_transfer.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    mask_grid = 4
    count = -(-mask_grid * mask_grid * settings.mask_ratio // 1)
    meta = {"command": command, "settings": dataclasses.asdict(settings), "random_share": count / mask_grid**2}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=2, sort_keys=True) + "\n"
    )
    args.output.with_suffix(".md").write_text(markdown(summary, meta))
    figure(summary).savefig(args.output.with_suffix(".png"), dpi=120)
    print(args.output.with_suffix(".md").read_text())
    return summary


if __name__ == "__main__":
    main()
