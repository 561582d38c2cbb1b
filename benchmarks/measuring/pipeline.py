"""Is pretraining input-bound? The input pipeline alone, the training step alone, and the two together.

Three measurements in one run, over one image folder (written here, ImageNet-like JPEGs, or given):

- (a) the input pipeline alone, images/s in total and per DataLoader worker: run_pretrain.py's default
  ``--image_decoding cpu`` (torchvision's ``decode_jpeg`` and uint8 ``resized_crop``,
  `modeling_gpa.data.torchvision_decoding`), the same crops by PIL (``--image_decoding pil``,
  `modeling_gpa.data.pipeline`), the float32 pipeline the uint8 ones replaced (kept here only as the baseline), the
  bare cost of one image (PIL decode + one bicubic crop-resize, one process), and ``--image_decoding device``
  (`modeling_gpa.data.device_decoding`): the workers' part (file bytes, JPEG header, crop box) everywhere, and the
  GPU's part (batched nvJPEG, crop, resize, flip, normalise) where torchvision imports and a GPU is present;
- (b) the training step alone (uint8 batch normalised on the device, forward, backward, AdamW; EMA update for the
  ema teacher), eager and under `torch.compile`, for MAE and GPA `ema` + MAM;
- (c) run_pretrain.py's own Trainer path end to end over the folder, timed in steady state (the first
  ``warmup_steps`` optimizer steps excluded), for the same two arms, also with ``--image_decoding device`` where
  the GPU's part runs; and its ratio to (b).

`benchmarks/benchmark_pipeline.py` is the command line.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from modeling_gpa.configuration_gpa import GPAConfig
from modeling_gpa.data.device_decoding import (
    DeviceDecodingImageDataset,
    DeviceDecodingUnavailable,
    decode_on_device,
    nvjpeg_decoder,
)
from modeling_gpa.data.encoded_images import ENCODED_KEY
from modeling_gpa.data.pipeline import (
    ImageDataset,
    PixelNormalizer,
    TrainCrop,
    collate_pixel_values,
    random_resized_crop_box,
    to_num_channels,
)
from modeling_gpa.data.torchvision_decoding import TorchvisionImageDataset, torchvision_decoding_available
from modeling_gpa.modeling_gpa import GPAForPreTraining

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "immunohistochemistry", "retina", "cat")
ARMS = {
    "mae": dict(mask_method="random", config=dict(gpa_teacher="self", gpa_prediction=False)),
    "gpa-ema-mam": dict(mask_method="gpa", config=dict(gpa_teacher="ema", gpa_prediction=True)),
}
MODELS = {
    "vit-b16": dict(image_size=224, patch_size=16),
    # A few-layer ViT on 32x32 crops: the step costs milliseconds on CPU, so the input pipeline dominates.
    "tiny": dict(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=64,
    ),
}
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Settings:
    """What to measure and on what."""

    image_dir: str
    num_images: int = 2048
    workers: int = 2
    batch_size: int = 64
    crop_size: int = 224
    model: str = "tiny"
    device: str = "cpu"
    bf16: bool = False
    step_iters: int = 10
    e2e_steps: int = 30
    warmup_steps: int = 5
    compile: bool = True
    # Compiling each arm again inside run_pretrain.py doubles the compile time; --quick measures it eager only.
    end_to_end_compiled: bool = True
    arms: tuple[str, ...] = tuple(ARMS)
    output_dir: str = "outputs/pipeline_benchmark_run"
    results: dict = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[benchmark_pipeline] {message}", flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# The image folder
# ----------------------------------------------------------------------------------------------------------------------


def photos() -> list[np.ndarray]:
    """scikit-image's bundled colour photos as (H, W, 3) uint8 (those that need a download are skipped)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # a photo that needs the network (pooch) is skipped
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            out.append(np.ascontiguousarray(image[..., :3]))
    return out


def _write_image(task: tuple[str, int, int]) -> None:
    """One ImageNet-like JPEG: a random crop of a photo with mild noise, resized to 400-600 x 300-450 px."""
    path, index, seed = task
    sources = _photos_once()
    rng = np.random.default_rng((seed, index))
    image = sources[index % len(sources)]
    height, width = image.shape[:2]
    crop_h, crop_w = int(height * rng.uniform(0.5, 1.0)), int(width * rng.uniform(0.5, 1.0))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    crop = image[top : top + crop_h, left : left + crop_w].astype(np.float32)
    crop += rng.normal(0, 6, crop.shape).astype(np.float32)
    size = (int(rng.integers(400, 600)), int(rng.integers(300, 450)))
    pil = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pil.save(path, quality=90)


_PHOTOS: list[np.ndarray] = []


def _photos_once() -> list[np.ndarray]:
    if not _PHOTOS:
        _PHOTOS.extend(photos())
    return _PHOTOS


def write_image_folder(directory: str | os.PathLike, count: int, seed: int = 0) -> list[str]:
    """ImageNet-like JPEGs (400-600 x 300-450 px, quality 90, 10 class folders) cut from scikit-image's photos.

    Image ``i`` depends only on (seed, i). Files already there are kept; the rest are written by all cores. Returns
    the files, sorted.
    """
    files = [str(Path(directory) / f"class_{index % 10}" / f"img_{index:06d}.jpg") for index in range(count)]
    tasks = [(path, index, seed) for index, path in enumerate(files) if not Path(path).is_file()]
    if len(tasks) > 64 and (os.cpu_count() or 1) > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool() as pool:
            pool.map(_write_image, tasks, chunksize=16)
    else:
        for task in tasks:
            _write_image(task)
    return sorted(files)


def image_files(directory: str | os.PathLike) -> list[str]:
    """The JPEG and PNG files under ``directory``, sorted."""
    suffixes = {".jpg", ".jpeg", ".png"}
    return sorted(str(p) for p in Path(directory).rglob("*") if p.suffix.lower() in suffixes)


# ----------------------------------------------------------------------------------------------------------------------
# (a) The input pipeline alone
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class FloatBaselineTransform:
    """The batch transform of the pipeline before the uint8 one (`Dataset.with_transform`): for each image decoded
    by `datasets`, channel conversion, RandomResizedCrop + flip with PIL, then ``(x / 255 - mean) / std`` as a
    (3, S, S) float32 tensor, in the worker. Kept here only as the baseline."""

    crop_size: int

    def crop(self, image: Image.Image) -> torch.Tensor:
        image = to_num_channels(image, 3)
        top, left, h, w = random_resized_crop_box(image.width, image.height, (0.2, 1.0), (3 / 4, 4 / 3))
        size = (self.crop_size, self.crop_size)
        image = image.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        if torch.rand(1).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.array(image, dtype=np.float32, copy=True)) / 255.0
        mean = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(-1, 1, 1)
        return (pixels.permute(2, 0, 1) - mean) / std

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {"pixel_values": [self.crop(to_num_channels(image, 3)) for image in batch["image"]]}


def float_baseline(folder, crop_size: int):
    """The imagefolder dataset as the float32 baseline pipeline reads it."""
    return folder.with_transform(FloatBaselineTransform(crop_size), columns=["image"])


def imagefolder(image_dir: str):
    """The folder through `datasets`' imagefolder builder, as run_pretrain.py --train_dir loads it."""
    import datasets

    return datasets.load_dataset("imagefolder", data_dir=image_dir, split="train")


def loader_rate(dataset, settings: Settings, passes: int = 1) -> float:
    """Images/s of a DataLoader over ``dataset`` (batches of ``batch_size``), the first batch (start-up) excluded."""
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        num_workers=settings.workers,
        collate_fn=collate_pixel_values,
        persistent_workers=settings.workers > 0,
        prefetch_factor=4 if settings.workers > 0 else None,
        drop_last=True,
    )
    seen, start = 0, None
    for _ in range(passes):
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            seen += batch[ENCODED_KEY].batch_size if ENCODED_KEY in batch else len(batch["pixel_values"])
    return seen / (time.perf_counter() - start)


def bare_image(path: str, crop_size: int) -> Image.Image:
    """The bare work of one image: PIL decode to RGB and one bicubic RandomResizedCrop resize."""
    image = Image.open(path).convert("RGB")
    top, left, h, w = random_resized_crop_box(image.width, image.height, (0.2, 1.0), (3 / 4, 4 / 3))
    return image.resize((crop_size, crop_size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))


def bare_ms_per_image(files: list[str], crop_size: int, rounds: int = 3) -> float:
    """CPU milliseconds of [`bare_image`] per image, in this process (fastest of ``rounds`` passes)."""
    best = math.inf
    for _ in range(rounds):
        start = time.process_time()
        for path in files:
            bare_image(path, crop_size)
        best = min(best, 1e3 * (time.process_time() - start) / len(files))
    return best


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def worker_ms_per_image(dataset, settings: Settings, rounds: int = 1) -> float:
    """CPU milliseconds the DataLoader workers spend per image: everything a worker does (read, decode, crop,
    collate into shared memory, hand the batch over), measured with `getrusage` on the exited workers.

    Two loaders per round, over two batches and over all of ``dataset``: the difference cancels the workers'
    start-up. The fastest round counts. Immune to other processes taking the cores (CPU time, not wall clock).
    """
    workers = max(settings.workers, 1)
    short = 2 * settings.batch_size
    long = len(dataset) - len(dataset) % settings.batch_size
    if long <= short:
        raise ValueError(f"{len(dataset)} images are too few: pass --num_images >= {2 * short}")

    def cpu_seconds(count: int) -> float:
        loader = DataLoader(
            torch.utils.data.Subset(dataset, range(count)),
            batch_size=settings.batch_size,
            num_workers=workers,
            collate_fn=collate_pixel_values,
            prefetch_factor=4,
        )
        before = _children_cpu_s()
        for _ in loader:
            pass
        del loader  # the workers exit and are reaped; their CPU time is then in RUSAGE_CHILDREN
        return _children_cpu_s() - before

    best = math.inf
    for _ in range(rounds):
        marginal = (cpu_seconds(long) - cpu_seconds(short)) / (long - short)
        best = min(best, 1e3 * marginal)
    return best


def gpu_decode_rate(files: list[str], settings: Settings, repeats: int = 2) -> dict:
    """``--image_decoding device`` alone: batched nvJPEG decoding, crop, resize, flip and normalisation on the GPU
    (`modeling_gpa.data.device_decoding`); the workers' part (file bytes, header, crop box) is done beforehand."""
    device = torch.device(settings.device)
    try:
        decoder = nvjpeg_decoder(device)
    except DeviceDecodingUnavailable:
        return {"skipped": "no CUDA device" if device.type != "cuda" else "torchvision's decode_jpeg does not load"}
    dataset = DeviceDecodingImageDataset(files, TrainCrop(settings.crop_size, 3))
    batch_size = settings.batch_size
    batches = [
        collate_pixel_values([dataset[i] for i in range(first, first + batch_size)])
        for first in range(0, len(files) - batch_size + 1, batch_size)
    ]
    normalizer = PixelNormalizer(IMAGENET_MEAN, IMAGENET_STD)
    rate = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            pixels, _ = decode_on_device(batch[ENCODED_KEY], batch.get("pixel_values"), device, decoder)
            normalizer(pixels)
        synchronize(device)
        rate = len(batches) * batch_size / (time.perf_counter() - start)
    return {"img_s": rate}


def measure_pipeline(settings: Settings, files: list[str]) -> dict:
    """(a): per-worker CPU cost and DataLoader throughput of the torchvision and PIL uint8 pipelines and the float32
    baseline, the bare decode + crop-resize cost, and GPU decoding."""
    results = {"workers": settings.workers, "batch_size": settings.batch_size, "crop_size": settings.crop_size}
    crop = TrainCrop(settings.crop_size, 3)
    try:
        folder = imagefolder(settings.image_dir)
    except ImportError:
        folder = None

    def over_images(dataset_type):
        return dataset_type(folder, crop, "image") if folder else dataset_type(files, crop)

    pipelines = {}
    if torchvision_decoding_available():
        pipelines["torchvision_pipeline"] = over_images(TorchvisionImageDataset)
    pipelines["pil_pipeline"] = over_images(ImageDataset)
    if folder is not None:
        pipelines["float32_baseline"] = float_baseline(folder, settings.crop_size)
    pipelines["device_decoding_workers"] = over_images(DeviceDecodingImageDataset)
    # Alternating pipelines, so that a change in the machine's load hits both alike.
    costs = {name: [] for name in pipelines}
    totals = {name: [] for name in pipelines}
    for _ in range(2):
        for name, dataset in pipelines.items():
            costs[name].append(worker_ms_per_image(dataset, settings))
            totals[name].append(loader_rate(dataset, settings))
    for name in pipelines:
        cost, total = min(costs[name]), max(totals[name])
        results[name] = {
            "worker_ms_per_image": cost,
            "img_s_per_worker": 1e3 / cost,
            "loader_img_s": total,
            "loader_img_s_per_worker": total / max(settings.workers, 1),
        }
    if folder is None:
        results["float32_baseline"] = {"skipped": "needs `datasets` (the baseline is the imagefolder path)"}
    if "torchvision_pipeline" not in pipelines:
        results["torchvision_pipeline"] = {"skipped": "torchvision does not import"}
    bare = bare_ms_per_image(files[: 4 * settings.batch_size], settings.crop_size)
    results["bare_decode_crop_resize"] = {"worker_ms_per_image": bare, "img_s_per_worker": 1e3 / bare}
    results["gpu_decode"] = gpu_decode_rate(files, settings)
    pil = results["pil_pipeline"]["worker_ms_per_image"]
    results["pil_vs_bare_time"] = pil / bare
    if folder is not None:
        results["pil_vs_float32_speed"] = results["float32_baseline"]["worker_ms_per_image"] / pil
    if "torchvision_pipeline" in pipelines:
        results["torchvision_vs_pil_speed"] = pil / results["torchvision_pipeline"]["worker_ms_per_image"]
    results["load_average"] = os.getloadavg()
    return results


# ----------------------------------------------------------------------------------------------------------------------
# (b) The training step alone
# ----------------------------------------------------------------------------------------------------------------------


def model_config(settings: Settings, arm: str) -> GPAConfig:
    return GPAConfig(**MODELS[settings.model], **ARMS[arm]["config"])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_step(settings: Settings, arm: str, compiled: bool) -> dict:
    """Median images/s of one training step on a fixed uint8 batch; ``first_call_s`` includes compilation."""
    device = torch.device(settings.device)
    config = model_config(settings, arm)
    torch.manual_seed(0)
    model = GPAForPreTraining(config).to(device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    normalizer = PixelNormalizer(IMAGENET_MEAN, IMAGENET_STD)
    side, patches = config.image_size, (config.image_size // config.patch_size) ** 2
    pixels = torch.randint(0, 256, (settings.batch_size, 3, side, side), dtype=torch.uint8, device=device)
    dtype = torch.bfloat16 if settings.bf16 else torch.float32

    def step() -> None:
        extra = {"noise": torch.rand(pixels.shape[0], patches, device=device)} if arm == "mae" else {}
        with torch.autocast(device.type, dtype=dtype, enabled=settings.bf16):
            loss = forward(normalizer(pixels), mask_progress=0.5, **extra).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if config.gpa_teacher == "ema":
            model.update_teacher()

    try:
        start = time.perf_counter()
        step()
        synchronize(device)
        first = time.perf_counter() - start
        step()
        times = []
        for _ in range(settings.step_iters):
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - start)
    except Exception as error:  # a compile failure is a result to report, not a reason to stop the benchmark
        return {"ran": False, "error": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"}
    seconds = statistics.median(times)
    return {"ran": True, "ms": 1e3 * seconds, "img_s": settings.batch_size / seconds, "first_call_s": first}


# ----------------------------------------------------------------------------------------------------------------------
# (c) run_pretrain.py end to end
# ----------------------------------------------------------------------------------------------------------------------


def load_run_pretrain():
    """run_scripts/run_pretrain.py as a module (it is a script, not part of the package)."""
    if "run_pretrain" in sys.modules:
        return sys.modules["run_pretrain"]
    spec = importlib.util.spec_from_file_location("run_pretrain", REPO / "run_scripts" / "run_pretrain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_pretrain"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def steady_state_timer(warmup_steps: int):
    """A TrainerCallback that times the optimizer steps after the first ``warmup_steps``."""
    from transformers import TrainerCallback

    class SteadyStateTimer(TrainerCallback):
        def __init__(self):
            self.start = self.end = None
            self.steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step < warmup_steps:
                return
            if torch.cuda.is_available() and not args.use_cpu:
                torch.cuda.synchronize()
            now = time.perf_counter()
            if self.start is None:
                self.start = now
            else:
                self.end, self.steps = now, self.steps + 1

    return SteadyStateTimer()


def pretrain_arguments(
    settings: Settings, arm: str, compiled: bool, output_dir: str, image_decoding: str = "cpu"
) -> list[str]:
    """run_pretrain.py's command line for one end-to-end arm."""
    overrides = ",".join(f"{key}={value}" for key, value in MODELS[settings.model].items())
    argv = [
        "--train_dir",
        settings.image_dir,
        "--train_val_split",
        "0.01",
        "--output_dir",
        output_dir,
        "--overwrite_output_dir",
        "--do_train",
        "--config_overrides",
        overrides,
        "--num_channels",
        "3",
        "--mask_method",
        ARMS[arm]["mask_method"],
        "--per_device_train_batch_size",
        str(settings.batch_size),
        "--max_steps",
        str(settings.e2e_steps),
        "--dataloader_num_workers",
        str(settings.workers),
        "--dataloader_drop_last",
        "true",
        "--save_strategy",
        "no",
        "--logging_steps",
        "10",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--seed",
        "0",
    ]
    if arm != "mae":
        argv += ["--gpa_teacher", ARMS[arm]["config"]["gpa_teacher"], "--gpa_prediction", "true"]
    if settings.device == "cpu":
        argv += ["--use_cpu", "true"]
    if settings.bf16:
        argv += ["--bf16", "true", "--optim", "adamw_torch_fused"]
    if compiled:
        argv += ["--torch_compile", "true"]
    if image_decoding != "cpu":
        argv += ["--image_decoding", image_decoding]
    return argv


def measure_end_to_end(settings: Settings, arm: str, compiled: bool, run_pretrain, image_decoding: str = "cpu") -> dict:
    """Steady-state images/s of run_pretrain.py's Trainer over the folder (data, normalisation, step, EMA, logging)."""
    name = f"e2e-{arm}-{'compiled' if compiled else 'eager'}-{image_decoding}-decoding"
    argv = pretrain_arguments(settings, arm, compiled, os.path.join(settings.output_dir, name), image_decoding)
    try:
        trainer, _ = run_pretrain.build_trainer(*run_pretrain.parse_arguments(argv))
        timer = steady_state_timer(settings.warmup_steps)
        trainer.add_callback(timer)
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    except Exception as error:  # reported in the results, like a compile failure in (b)
        return {"ran": False, "error": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"}
    images = timer.steps * settings.batch_size
    return {
        "ran": True,
        "img_s": images / (timer.end - timer.start),
        "steady_steps": timer.steps,
        "total_s": total,
        "command": "python run_scripts/run_pretrain.py " + " ".join(argv),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Run and report
# ----------------------------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict:
    import PIL
    import transformers

    found = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    found["pillow"] = PIL.__version__
    for name in ("accelerate", "datasets", "torchvision"):
        try:
            found[name] = __import__(name).__version__
        except Exception:  # not installed, or (torchvision on CPU torch) does not import
            found[name] = None
    return found


def run(settings: Settings, command: list[str]) -> dict:
    """All three measurements; the results dict (also kept in ``settings.results``)."""
    results = settings.results
    results.update(
        command="python benchmarks/benchmark_pipeline.py " + " ".join(command),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=machine(),
        versions=versions(),
        settings={k: v for k, v in vars(settings).items() if k != "results"},
    )
    start = time.perf_counter()
    files = image_files(settings.image_dir)
    if len(files) < settings.num_images:
        log(f"writing {settings.num_images} ImageNet-like JPEGs to {settings.image_dir}")
        files = write_image_folder(settings.image_dir, settings.num_images)
    results["num_images"] = len(files)
    log(f"(a) input pipeline alone, {settings.workers} workers")
    results["pipeline"] = measure_pipeline(settings, files)
    modes = [False, True] if settings.compile else [False]
    results["step"], results["end_to_end"], results["end_to_end_device_decoding"] = {}, {}, {}
    run_pretrain = load_run_pretrain()
    device_decoding = results["pipeline"]["gpu_decode"]
    for arm in settings.arms:
        for compiled in modes:
            key = f"{arm}/{'compiled' if compiled else 'eager'}"
            log(f"(b) training step alone: {key}")
            results["step"][key] = measure_step(settings, arm, compiled)
            if compiled and not settings.end_to_end_compiled:
                results["end_to_end"][key] = {"ran": False, "error": "skipped (--quick)"}
                continue
            log(f"(c) run_pretrain.py end to end: {key}")
            results["end_to_end"][key] = measure_end_to_end(settings, arm, compiled, run_pretrain)
            if "skipped" in device_decoding:
                results["end_to_end_device_decoding"][key] = {"ran": False, "error": device_decoding["skipped"]}
            else:
                log(f"(c) run_pretrain.py end to end, --image_decoding device: {key}")
                results["end_to_end_device_decoding"][key] = measure_end_to_end(
                    settings, arm, compiled, run_pretrain, image_decoding="device"
                )
            step = results["step"][key]
            for e2e in (results["end_to_end"][key], results["end_to_end_device_decoding"][key]):
                if step.get("ran") and e2e.get("ran"):
                    e2e["ratio_to_step"] = e2e["img_s"] / step["img_s"]
    results["seconds"] = time.perf_counter() - start
    return results


def _fmt(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    """The results as a Markdown report."""
    settings, pipeline = results["settings"], results["pipeline"]
    lines = [
        f"# Input pipeline and training step: {results['machine'].get('gpu') or results['machine']['cpu']}",
        "",
        f"- Command: `{results['command']}`",
        f"- Date: {results['date']}; {results['seconds']:.0f} s in all",
        f"- Machine: {results['machine']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
        f"- Images: {results['num_images']} JPEGs in `{settings['image_dir']}`; batch {settings['batch_size']}, "
        f"{settings['workers']} DataLoader workers; model `{settings['model']}` {MODELS[settings['model']]}, "
        f"device {settings['device']}{', bf16' if settings['bf16'] else ''}",
        "",
        f"## (a) Input pipeline alone ({pipeline['crop_size']} px RandomResizedCrop + flip)",
        "",
        "Per worker: CPU time the DataLoader workers spend per image (read, decode, crop, collate into shared memory, "
        "hand over; `getrusage` of the exited workers, start-up cancelled by differencing two lengths; fastest of "
        "two alternating rounds); images/s = 1000 / ms. Bare: decode + crop-resize alone, CPU time in one process. "
        "Loader: "
        f"wall-clock images/s through a DataLoader with {pipeline['workers']} workers (depends on what else runs on "
        f"the machine: load average {', '.join(f'{x:.1f}' for x in pipeline['load_average'])}).",
        "",
        "| pipeline | per worker, ms/image | per worker, images/s | loader, images/s | loader, per worker |",
        "|---|---|---|---|---|",
    ]
    names = {
        "torchvision_pipeline": "--image_decoding cpu, run_pretrain.py's default (torchvision decode_jpeg + uint8 "
        "resized_crop)",
        "pil_pipeline": "--image_decoding pil (PIL decode + Image.resize, uint8 out)",
        "float32_baseline": "float32 baseline (the pipeline the uint8 ones replaced)",
        "bare_decode_crop_resize": "bare PIL decode + crop-resize of one image",
        "device_decoding_workers": "--image_decoding device, the workers' part (file bytes, JPEG header, crop box)",
        "gpu_decode": "--image_decoding device, the GPU's part (nvJPEG, batched; crop, resize, flip, normalise)",
    }
    for key, name in names.items():
        row = pipeline[key]
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | | |")
            continue
        lines.append(
            f"| {name} | {_fmt(row.get('worker_ms_per_image'), '.2f')} | {_fmt(row.get('img_s_per_worker'))} | "
            f"{_fmt(row.get('loader_img_s', row.get('img_s')))} | {_fmt(row.get('loader_img_s_per_worker'))} |"
        )
    lines += [
        "",
        (
            f"Per worker, run_pretrain.py's torchvision pipeline runs {pipeline['torchvision_vs_pil_speed']:.2f}x as "
            "fast as the PIL one. "
            if "torchvision_vs_pil_speed" in pipeline
            else ""
        )
        + f"The PIL pipeline takes {pipeline['pil_vs_bare_time']:.2f}x the bare time of one image"
        + (
            f" and runs {pipeline['pil_vs_float32_speed']:.2f}x as fast as the float32 baseline."
            if "pil_vs_float32_speed" in pipeline
            else "."
        ),
        "",
        "## (b) Training step alone and (c) run_pretrain.py end to end",
        "",
        "Step alone: a fixed uint8 batch normalised on the device, forward, backward, AdamW (and the EMA update), "
        "median "
        "of the timed steps; first call includes compilation (shorter when inductor's cache holds the graphs from an "
        "earlier run). End to end: run_pretrain.py's Trainer over the image "
        f"folder, timed after the first {settings['warmup_steps']} of {settings['e2e_steps']} steps.",
        "",
        "| arm | step alone, images/s | first call, s | end to end, images/s | end to end / step | "
        "end to end, `--image_decoding device`, images/s | its end to end / step |",
        "|---|---|---|---|---|---|---|",
    ]
    device_runs = results.get("end_to_end_device_decoding", {})
    for key, step in results["step"].items():
        e2e, device = results["end_to_end"][key], device_runs.get(key, {"error": "-"})
        step_text = _fmt(step.get("img_s")) if step.get("ran") else step.get("error")
        e2e_text = _fmt(e2e.get("img_s")) if e2e.get("ran") else e2e.get("error")
        device_text = _fmt(device.get("img_s")) if device.get("ran") else device.get("error")
        lines.append(
            f"| {key} | {step_text} | {_fmt(step.get('first_call_s'), '.1f')} | {e2e_text} | "
            f"{_fmt(e2e.get('ratio_to_step'), '.2f')} | {device_text} | {_fmt(device.get('ratio_to_step'), '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def save(results: dict, output: str, render: Callable[[dict], str] = markdown) -> tuple[Path, Path]:
    """Writes ``<output>.json`` and ``<output>.md`` (the results as ``render`` writes them)."""
    base = Path(output)
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md_path.write_text(render(results))
    return json_path, md_path


def quick_settings(image_dir: str) -> dict:
    """``--quick``: a CPU run of about a minute (512 images, tiny model, a few steps; end to end eager only)."""
    return dict(
        image_dir=image_dir,
        num_images=512,
        workers=2,
        batch_size=32,
        model="tiny",
        device="cpu",
        step_iters=5,
        e2e_steps=12,
        warmup_steps=3,
        end_to_end_compiled=False,
    )


__all__ = ["Settings", "markdown", "quick_settings", "run", "save", "write_image_folder"]
