#!/usr/bin/env python
"""Our weights in mmsegmentation's MAE backbone, by its own converter and loader: keys and feature maps.

    pip install -e '.[mmseg]'
    python benchmarks/check_mmseg_loading.py --model_name_or_path outputs/gpa-vit-b16

Converts the checkpoint with ``convert to-timm --layout mae``, renames it with mmsegmentation's ``beit2mmseg.py``,
loads it into the ``MAE`` backbone of its ``mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py`` (512-pixel crops,
blocks 4, 6, 8, 12) through that backbone's ``init_weights``, and compares its four feature maps with
``GPABackbone``'s on one image (``modeling_gpa.tools.mmseg_loading``). Without ``--model_name_or_path``, a
randomly initialised GPA ViT-B/16 at 224 pixels (GPAConfig's defaults) stands in. Writes ``<output>.json`` and
``.md`` (default ``outputs/benchmarks/mmseg_loading``); exits 1 when a weight is missing or a map differs by more
than ``--tolerance``.
"""

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measuring.fashion_mnist import environment  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", help="A GPA / ViTMAE / ViT checkpoint; default: a random ViT-B/16.")
    parser.add_argument("--work_dir", default="outputs/mmseg_loading", help="Where the converted files go.")
    parser.add_argument("--output", default="outputs/benchmarks/mmseg_loading", help="Prefix of the .md and .json.")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="Largest feature-map difference accepted.")
    parser.add_argument("--crop_size", type=int, help="The backbone's img_size; default: the config's, 512.")
    args = parser.parse_args(argv)
    import mmengine
    import torch

    from modeling_gpa import GPAConfig, GPAForPreTraining
    from modeling_gpa.tools.mmseg_loading import check_mmseg_loading

    model_name_or_path = args.model_name_or_path
    if model_name_or_path is None:
        torch.manual_seed(0)
        model_name_or_path = str(Path(args.work_dir, "gpa-vit-b16-random"))
        GPAForPreTraining(GPAConfig()).save_pretrained(model_name_or_path)
    overrides = {"img_size": (args.crop_size, args.crop_size)} if args.crop_size else None
    report = check_mmseg_loading(model_name_or_path, args.work_dir, overrides)
    largest = max(entry["max_abs_diff"] for entry in report["feature_maps"])
    passed = not report["keys"]["missing"] and largest <= args.tolerance
    machine, versions = environment("cpu")
    command = shlex.join(["check_mmseg_loading.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"command": command, "date": datetime.date.today().isoformat(), "machine": machine}
    result |= {"versions": f"{versions}, mmengine {mmengine.__version__}", "checkpoint": args.model_name_or_path}
    result |= {**report, "largest_abs_diff": largest, "tolerance": args.tolerance, "passed": passed}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0 if passed else 1


def markdown(result: dict) -> str:
    checkpoint = result["checkpoint"] or "a randomly initialised GPA ViT-B/16 at 224 pixels"
    eps = result["layer_norm_eps"]
    lines = ["# Our weights in mmsegmentation's MAE backbone", "", f"Command: `{result['command']}`  "]
    lines += [
        f"Date: {result['date']}; machine: {result['machine']}; {result['versions']}, "
        f"mmsegmentation {result['mmsegmentation']}.",
        "",
        f"Checkpoint: {checkpoint}, converted by `convert to-timm --layout mae`, renamed by mmsegmentation's "
        f"`beit2mmseg.py`, loaded by the `MAE` backbone of `{result['config']}` in its `init_weights` "
        f"({result['settings']['img_size'][0]}-pixel crops, position table resized by mmsegmentation).",
        "",
        f"- weights the backbone did not get: {result['keys']['missing'] or 'none'} (besides layer scale and "
        "relative position bias, which MAE's own file lacks too)",
        f"- keys it left over: {', '.join(result['keys']['unexpected']) or 'none'}",
        f"- LayerNorm eps: ours {eps['ours']}, the config's {eps['mmsegmentation']}",
        "",
        "| block | feature map | max abs difference from GPABackbone |",
        "|---|---|---|",
    ]
    lines += [f"| {row['block']} | {row['shape']} | {row['max_abs_diff']:.2e} |" for row in result["feature_maps"]]
    verdict = "passed" if result["passed"] else "FAILED"
    lines += ["", f"{verdict}: tolerance {result['tolerance']:g}, largest difference {result['largest_abs_diff']:.2e}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
