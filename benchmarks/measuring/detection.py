"""Conditional DETR over GPABackbone on cluttered Fashion-MNIST's garment boxes: loss and COCO-style box mAP.

    python benchmarks/benchmark_detection.py                       # 300 CPU steps, random-init encoder
    python benchmarks/benchmark_detection.py --model_name_or_path outputs/gpa-cluttered --steps 1000
    python benchmarks/benchmark_detection.py --quick               # under a minute

The images and boxes are the cluttered benchmark's (``benchmarks.measuring.fashion_mnist.load_arrays``: 56x56
canvases, one garment each, its box from its pixel mask; 10 classes). The detector is
``ConditionalDetrForObjectDetection`` (``modeling_gpa.evaluation.detection``) over the encoder's last block;
mAP is the offline ``box_map`` module on the test images. Writes ``<output>.json`` and ``.md`` (default under
``outputs/benchmarks/``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.measuring.fashion_mnist import Settings, environment, initial_model, load_arrays
from modeling_gpa.data.fashion_mnist import FASHION_MNIST_CLASSES
from modeling_gpa.evaluation.detection import conditional_detr, detections, detr_targets, mask_boxes, train_detector
from modeling_gpa.evaluation.metric_loading import load_metric


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", help="A GPA / ViTMAE / ViT checkpoint of 56-pixel gray images.")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--work_dir", default="outputs/detection_bench", help="Where the generated images are cached.")
    parser.add_argument("--output", default="outputs/benchmarks/detection", help="Prefix of the .md and .json.")
    parser.add_argument("--quick", action="store_true", help="30 steps on 256 images: under a minute.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = Settings(train_samples=256 if args.quick else 2000, test_samples=64 if args.quick else 200)
    steps = 30 if args.quick else args.steps
    arrays = load_arrays("cluttered", settings, Path(args.work_dir))
    id2label = dict(enumerate(FASHION_MNIST_CLASSES))
    torch.manual_seed(0)
    config = None if args.model_name_or_path else initial_model("cluttered", settings, 0, gpa_prediction=False).config
    model = conditional_detr(args.model_name_or_path, id2label, config)
    size = arrays["train_x"].shape[-1]
    targets = detr_targets(mask_boxes(arrays["train_mask"]), arrays["train_y"], size)
    start = time.perf_counter()
    losses = train_detector(model, arrays["train_x"], targets, steps, args.batch_size, args.learning_rate)
    seconds = time.perf_counter() - start
    model.eval()
    predictions = [
        row for i in range(0, len(arrays["test_x"]), 64) for row in detections(model, arrays["test_x"][i : i + 64])
    ]
    test_boxes = mask_boxes(arrays["test_mask"])
    references = [
        {"boxes": box.view(1, 4), "labels": label.view(1)}
        for box, label in zip(test_boxes, arrays["test_y"], strict=True)
    ]
    metric = load_metric("box_map").compute(
        predictions=[{key: value.numpy() for key, value in row.items()} for row in predictions],
        references=[{key: value.numpy() for key, value in row.items()} for row in references],
    )
    window = max(1, steps // 10)
    result = {
        "model_name_or_path": args.model_name_or_path,
        "steps": steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "train_images": len(arrays["train_x"]),
        "test_images": len(arrays["test_x"]),
        "loss_first": statistics.fmean(losses[:window]),
        "loss_last": statistics.fmean(losses[-window:]),
        "train_seconds": seconds,
        **metric,
    }
    machine, versions = environment("cpu")
    command = shlex.join(["benchmark_detection.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"command": command, "date": datetime.date.today().isoformat(), "machine": machine, **result}
    result["versions"] = versions
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Conditional DETR over GPABackbone, cluttered Fashion-MNIST boxes (CPU)", ""]
    lines += [
        f"- {key}: {value:.4g}" if isinstance(value, float) else f"- {key}: {value}" for key, value in result.items()
    ]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))
    return result
