"""Does the start of a pretraining run grow with the dataset? Image folders, parquet and webdataset shards, read
map-style (an Arrow cache first) and streamed, side by side.

For each size (tiny JPEGs in class subfolders, written by the benchmark, then written once more as parquet and as
webdataset shards with `modeling_gpa.data.shards`) and each (format, mode):

- **time to the first step**: ``run_pretrain.py`` in a fresh process with 0 DataLoader workers, from the process's
  start to the end of its first optimizer step, and the process's CPU time (it exits right after that step; the
  wall clock depends on what else the machine runs, the CPU time much less); map-style twice (a first start with an
  empty cache, then a restart that finds the cache), streamed once (nothing is cached);
- **peak memory** of that process (``ru_maxrss`` at the first step);
- **one worker's rate**: CPU milliseconds per image of one DataLoader worker (`getrusage` of the exited worker,
  start-up cancelled by differencing two lengths) and its images/s, map-style (`ImageDataset`) against streamed
  (`StreamingImageDataset` over the parquet shards, with its shuffle buffer), on the same images: the tiny JPEGs of
  the smallest size and ImageNet-like JPEGs (`benchmarks.measuring.pipeline`'s, 400-600 x 300-450 px).

Every measurement is kept in ``<work_dir>/measurements.json`` as it finishes, so an interrupted run resumes there.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.measuring.pipeline import REPO, _children_cpu_s, _fmt, load_run_pretrain, machine, versions
from benchmarks.measuring.pipeline import save as save_results
from modeling_gpa.data.pipeline import ImageDataset, TrainCrop, collate_pixel_values
from modeling_gpa.data.shards import prepare_shards
from modeling_gpa.data.streaming import DEFAULT_SHUFFLE_BUFFER_SIZE, StreamingImageDataset, load_image_streams

FORMATS = ("imagefolder", "parquet", "webdataset")
MODES = ("map", "streaming")
TINY_SIDE = 32
IMAGES_PER_SHARD = 1000
MODEL = "patch_size=8,hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64"
MODEL += (
    ",decoder_hidden_size=32,decoder_num_hidden_layers=1,decoder_num_attention_heads=2,decoder_intermediate_size=64"
)


@dataclass
class Settings:
    """What to measure: image counts, formats, the one-worker comparison's image counts and batch."""

    sizes: tuple[int, ...] = (2_000, 20_000, 200_000)
    formats: tuple[str, ...] = FORMATS
    work_dir: str = "outputs/data_benchmark"
    batch_size: int = 32
    worker_images: int = 2_048
    photo_images: int = 512
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER_SIZE
    results: dict = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[benchmark_data] {message}", flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# The data
# ----------------------------------------------------------------------------------------------------------------------


def write_tiny_jpegs(folder: Path, count: int, classes: int = 10, seed: int = 0) -> None:
    """``count`` 32x32 JPEGs (about 1 kB: a gradient and noise) in ``classes`` subfolders; a marker file says done."""
    marker = folder / ".complete"
    if marker.is_file():
        return
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, TINY_SIDE, dtype=np.float32)
    for index in range(count):
        target = folder / f"class_{index % classes:02d}"
        target.mkdir(parents=True, exist_ok=True)
        pixels = ramp[None, :, None] + rng.normal(0, 25, (TINY_SIDE, TINY_SIDE, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target / f"{index:07d}.jpg", quality=85)
    marker.write_text(str(count))


def prepared_data(settings: Settings, size: int) -> dict[str, Path]:
    """The image folder and its parquet and webdataset shards for ``size`` images, written once under the work dir."""
    root = Path(settings.work_dir) / f"data_{size}"
    folder = root / "images"
    if not (folder / ".complete").is_file():
        log(f"writing {size:,} tiny JPEGs to {folder}")
        write_tiny_jpegs(folder, size)
    paths = {"imagefolder": folder}
    for shard_format in ("parquet", "webdataset"):
        target = root / shard_format
        if not (target / ".complete").is_file():
            log(f"writing {size:,} images as {shard_format} shards to {target}")
            shutil.rmtree(target, ignore_errors=True)
            prepare_shards(str(folder), str(target), shard_format=shard_format, images_per_shard=IMAGES_PER_SHARD)
            (target / ".complete").write_text(str(size))
        paths[shard_format] = target
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# Time to the first step and peak memory, in a fresh process
# ----------------------------------------------------------------------------------------------------------------------


def first_step_arguments(source: Path, shard_format: str, mode: str, output_dir: Path, cache_dir: Path) -> list[str]:
    """run_pretrain.py flags for two steps of a tiny model on ``source``, 0 workers, all of train (no held-out)."""
    flag = "--train_dir" if shard_format == "imagefolder" else "--dataset_name"
    args = [flag, str(source), "--do_train", "--max_steps", "2", "--per_device_train_batch_size", "32"]
    args += ["--image_size", str(TINY_SIDE), "--config_overrides", MODEL, "--dataloader_num_workers", "0"]
    args += ["--train_val_split", "0", "--output_dir", str(output_dir), "--overwrite_output_dir"]
    args += ["--cache_dir", str(cache_dir), "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"]
    return args + (["--streaming"] if mode == "streaming" else [])


def first_step_in_this_process(args: list[str]) -> dict:
    """Builds the trainer as run_pretrain.py does and trains one step; the wall-clock time and peak RSS then."""
    from transformers import TrainerCallback

    run_pretrain = load_run_pretrain()
    model_args, data_args, training_args = run_pretrain.parse_arguments(args)
    trainer, _ = run_pretrain.build_trainer(model_args, data_args, training_args)
    reached = {}

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            reached["time"] = time.time()
            reached["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            control.should_training_stop = True

    trainer.add_callback(FirstStep())
    trainer.train()
    return reached


def time_to_first_step(args: list[str]) -> dict:
    """``first_step_in_this_process(args)`` in a new Python process: seconds from its start, and its peak RSS."""
    code = (
        "import json, sys; from benchmarks.measuring.data import first_step_in_this_process; "
        "print('FIRST_STEP ' + json.dumps(first_step_in_this_process(sys.argv[1:])))"
    )
    # The checkout's root on the path: the measuring code is not installed with the package.
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    environment = {
        **os.environ,
        "PYTHONPATH": python_path,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    cpu_before, start = _children_cpu_s(), time.time()
    process = subprocess.run(
        [sys.executable, "-c", code, *args], env=environment, capture_output=True, text=True, timeout=3600
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("FIRST_STEP ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"run_pretrain.py failed: {(process.stdout + process.stderr)[-2000:]}")
    reached = json.loads(lines[-1].removeprefix("FIRST_STEP "))
    return {
        "first_step_s": reached["time"] - start,
        # The whole process's CPU time (it exits right after the first step): unlike the wall clock, the same on
        # a busy machine.
        "cpu_s": _children_cpu_s() - cpu_before,
        "peak_rss_mb": reached["peak_rss_mb"],
    }


# ----------------------------------------------------------------------------------------------------------------------
# One DataLoader worker, map-style against streamed
# ----------------------------------------------------------------------------------------------------------------------


def one_worker(make_dataset, count: int, batch_size: int) -> dict:
    """CPU ms per image and images/s of one DataLoader worker over the first ``count`` images of
    ``make_dataset(count)``; start-up cancelled by differencing against two batches."""

    def run(length: int) -> tuple[float, float]:
        loader = DataLoader(make_dataset(length), batch_size=batch_size, num_workers=1, collate_fn=collate_pixel_values)
        before, start = _children_cpu_s(), time.perf_counter()
        images = sum(len(batch["pixel_values"]) for batch in loader)
        wall = time.perf_counter() - start
        del loader
        if images != length:
            raise RuntimeError(f"the loader gave {images} images of {length}")
        return _children_cpu_s() - before, wall

    short = 2 * batch_size
    (cpu_long, wall_long), (cpu_short, wall_short) = run(count), run(short)
    return {
        "worker_ms_per_image": 1e3 * (cpu_long - cpu_short) / (count - short),
        "images_per_s": (count - short) / (wall_long - wall_short),
    }


def compare_one_worker(folder: Path, shards: Path, count: int, settings: Settings, image_size: int) -> dict:
    """The same ``count`` images through one worker, map-style from the folder and streamed from parquet shards."""
    crop = TrainCrop(image_size, 3)
    streams = load_image_streams(dataset_name=str(shards))
    files = sorted(str(path) for path in folder.rglob("*.jpg"))[:count]

    def mapped(length: int) -> ImageDataset:
        return ImageDataset(files[:length], crop)

    def streamed(length: int) -> StreamingImageDataset:
        rows = ImageDataset(streams.train.take(length), crop, streams.image_column)
        return StreamingImageDataset(rows, min(settings.shuffle_buffer_size, length), seed=0)

    measured = {
        "map": one_worker(mapped, count, settings.batch_size),
        "streaming": one_worker(streamed, count, settings.batch_size),
    }
    measured["ratio"] = measured["streaming"]["worker_ms_per_image"] / measured["map"]["worker_ms_per_image"]
    return measured


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


def _load_measurements(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _keep(path: Path, measurements: dict) -> None:
    path.write_text(json.dumps(measurements, indent=1) + "\n")


def run(settings: Settings, command: list[str]) -> dict:
    """Every measurement (each kept in the work dir when done); the results dict."""
    work = Path(settings.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    kept_path = work / "measurements.json"
    kept = _load_measurements(kept_path)
    for size in settings.sizes:
        paths = prepared_data(settings, size)
        for shard_format in settings.formats:
            for mode in MODES:
                starts = ("first_start", "restart") if mode == "map" else ("first_start",)
                for start in starts:
                    key = f"{size}/{shard_format}/{mode}/{start}"
                    if key in kept:
                        continue
                    cache = work / "cache" / f"{size}_{shard_format}_{mode}"
                    if start == "first_start":
                        shutil.rmtree(cache, ignore_errors=True)
                    log(f"time to the first step: {key}")
                    output_dir = work / "runs" / f"{size}_{shard_format}_{mode}"
                    kept[key] = time_to_first_step(
                        first_step_arguments(paths[shard_format], shard_format, mode, output_dir, cache)
                    )
                    _keep(kept_path, kept)
    smallest = prepared_data(settings, min(settings.sizes))
    if "one_worker/tiny" not in kept:
        log("one worker, tiny JPEGs")
        count = min(settings.worker_images, min(settings.sizes))
        kept["one_worker/tiny"] = compare_one_worker(
            smallest["imagefolder"], smallest["parquet"], count, settings, TINY_SIDE
        )
        _keep(kept_path, kept)
    if settings.photo_images and "one_worker/photos" not in kept:
        from benchmarks.measuring.pipeline import write_image_folder

        log(f"one worker, {settings.photo_images} ImageNet-like JPEGs")
        photos = work / "photos" / "images"
        if len(list(photos.rglob("*.jpg"))) < settings.photo_images:
            write_image_folder(photos, settings.photo_images)
        shards = work / "photos" / "parquet"
        shutil.rmtree(shards, ignore_errors=True)
        prepare_shards(str(photos), str(shards), images_per_shard=IMAGES_PER_SHARD)
        kept["one_worker/photos"] = compare_one_worker(photos, shards, settings.photo_images, settings, 224)
        _keep(kept_path, kept)
    return {
        "command": "python benchmarks/benchmark_data.py " + " ".join(command),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": {k: v for k, v in vars(settings).items() if k != "results"},
        "measurements": kept,
        "targets": targets(settings, kept),
    }


def targets(settings: Settings, kept: dict) -> dict:
    """The issue's targets, read off the measurements: streaming's start at the largest size against the smallest
    (time within 1.3x, memory within 100 MB), and one streaming worker within 1.2x of a map-style one."""
    small, large = min(settings.sizes), max(settings.sizes)
    found = {}
    for shard_format in settings.formats:
        a, b = (
            kept.get(f"{small}/{shard_format}/streaming/first_start"),
            kept.get(f"{large}/{shard_format}/streaming/first_start"),
        )
        if a and b and large > small:
            found[f"streaming {shard_format}: first step at {large:,} / {small:,} images"] = {
                "time_ratio": b["first_step_s"] / a["first_step_s"],
                "cpu_time_ratio": b["cpu_s"] / a["cpu_s"],
                "memory_mb_more": b["peak_rss_mb"] - a["peak_rss_mb"],
                "met": b["first_step_s"] <= 1.3 * a["first_step_s"] and b["peak_rss_mb"] - a["peak_rss_mb"] <= 100,
            }
    for name in ("tiny", "photos"):
        if f"one_worker/{name}" in kept:
            ratio = kept[f"one_worker/{name}"]["ratio"]
            found[f"one streaming worker / one map-style worker, {name}"] = {"ratio": ratio, "met": ratio <= 1.2}
    return found


def markdown(results: dict) -> str:
    """The results as tables: first step and memory per size, then one worker's rate."""
    settings, kept = results["settings"], results["measurements"]
    lines = [
        "# Data loading at scale: time to the first step, memory, one worker's rate",
        "",
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
        "",
        "Time from the process's start to the end of its first optimizer step, and the process's peak memory then, of "
        "`run_pretrain.py` on tiny JPEGs (32x32, about 1 kB, 10 class folders; shards of "
        f"{IMAGES_PER_SHARD:,} images), 0 DataLoader workers, a 2-block ViT of width 32. Map-style: a first start "
        "with an empty cache, then a restart that finds it. Streamed: nothing is cached.",
        "",
        "| images | format | map-style first start | map-style restart | streamed | memory map / streamed (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]

    def seconds(entry: dict) -> str:
        if not entry:
            return "—"
        return f"{entry['first_step_s']:.1f} s ({entry['cpu_s']:.1f} s CPU)"

    for size in settings["sizes"]:
        for shard_format in settings["formats"]:
            first = kept.get(f"{size}/{shard_format}/map/first_start", {})
            again = kept.get(f"{size}/{shard_format}/map/restart", {})
            stream = kept.get(f"{size}/{shard_format}/streaming/first_start", {})
            lines.append(
                f"| {size:,} | {shard_format} | {seconds(first)} | {seconds(again)} | {seconds(stream)} | "
                f"{_fmt(first.get('peak_rss_mb'), ',.0f')} / {_fmt(stream.get('peak_rss_mb'), ',.0f')} |"
            )
    lines += [
        "",
        "One DataLoader worker on the same images, map-style (an image list) against streamed (parquet shards, "
        f"shuffle buffer {settings['shuffle_buffer_size']:,}): CPU ms per image of the worker (`getrusage`, start-up "
        "differenced away) and its images/s.",
        "",
        "| images | map-style ms / image | streamed ms / image | streamed / map | map images/s | streamed images/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("tiny", "tiny JPEGs, 32 px crops"), ("photos", "ImageNet-like JPEGs, 224 px crops")):
        if f"one_worker/{name}" in kept:
            m = kept[f"one_worker/{name}"]
            lines.append(
                f"| {label} | {m['map']['worker_ms_per_image']:.3f} | {m['streaming']['worker_ms_per_image']:.3f} | "
                f"{m['ratio']:.2f}x | {m['map']['images_per_s']:,.0f} | {m['streaming']['images_per_s']:,.0f} |"
            )
    lines += ["", "Targets:", ""]
    for name, target in results["targets"].items():
        detail = ", ".join(f"{k} {v:.2f}" for k, v in target.items() if k != "met")
        lines.append(f"- {name}: {detail} ({'met' if target['met'] else 'missed'})")
    return "\n".join(lines) + "\n"


def save(results: dict, output: str) -> tuple[Path, Path]:
    """Writes ``<output>.json`` and ``<output>.md``."""
    return save_results(results, output, render=markdown)


def quick_settings(work_dir: str) -> Settings:
    """``--quick``: 500 and 2,000 parquet images, 500 tiny images through one worker."""
    return Settings(sizes=(500, 2_000), formats=("parquet",), work_dir=work_dir, worker_images=500, photo_images=0)


__all__ = ["FORMATS", "Settings", "markdown", "quick_settings", "run", "save", "write_tiny_jpegs"]
