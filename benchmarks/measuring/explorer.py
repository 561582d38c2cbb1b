"""How fast the GPA explorer starts and answers, for the quick start's checkpoint and a ViT-B/16 at 224.

    python benchmarks/benchmark_explorer.py --quick_start outputs/gpa-fashion-mnist --output benchmarks/explorer_cpu

Per checkpoint: *start-up*, from launching ``run_scripts/gpa_explorer.py`` to the page answering (model loading,
Gradio, the bundled examples), and the first ``/explore`` answer after it; then the *latency of each change* a user
makes (training progress, mask ratio, head, block, score variant, a new image, an object mask), each the wall time of
a ``gradio_client`` call to ``/explore`` on 127.0.0.1 (``--repeats`` times, median and max), and of one ``/rank``.
The ViT-B/16 is built from ``GPAConfig()``'s defaults (random weights: the cost does not depend on them) and saved
first. Without a quick-start checkpoint, one of its architecture at random initialisation stands in (and the
results say so). Writes ``<output>.md`` and ``<output>.json`` (default ``outputs/benchmarks/explorer_cpu``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.data.image_inputs import SKIMAGE_PHOTOS, example_images

ROOT = Path(__file__).resolve().parents[2]
# scripts/pretrain.sh's model: 28x28 grey inputs in 4x4 patches, 4 blocks of width 96, a 1-block decoder of width 64.
QUICK_START_ARCHITECTURE = dict(
    image_size=28,
    num_channels=1,
    patch_size=4,
    hidden_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=384,
    decoder_hidden_size=64,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=4,
    decoder_intermediate_size=256,
    gpa_teacher="self",
)
STARTUP_TIMEOUT_S = 300


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick_start", default="outputs/gpa-fashion-mnist", help="The quick start's checkpoint.")
    parser.add_argument("--repeats", type=int, default=5, help="Calls per kind of change.")
    parser.add_argument("--skip_vit_base", action="store_true", help="Measure the quick-start checkpoint only.")
    parser.add_argument("--output", default="outputs/benchmarks/explorer_cpu", help="Results path without suffix.")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def saved_model(config: GPAConfig, directory: str) -> str:
    torch.manual_seed(0)
    GPAForPreTraining(config).save_pretrained(directory)
    return directory


def start_server(checkpoint: str) -> tuple[subprocess.Popen, str, float]:
    """Launches the explorer; returns the process, its address and the seconds until its page answered."""
    port = free_port()
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    command = [sys.executable, str(ROOT / "run_scripts" / "gpa_explorer.py"), "--model_name_or_path", checkpoint]
    start = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--server_port", str(port)], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - start < STARTUP_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"the explorer exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url, time.perf_counter() - start
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the explorer did not answer within {STARTUP_TIMEOUT_S} s")


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def change_latencies(client, images: list[str], object_mask: str, num_layers: int, repeats: int) -> dict:
    """Seconds per ``/explore`` call for each kind of change (every call changes one control from the last one)."""
    from gradio_client import handle_file

    state = {"image": handle_file(images[0]), "block": "0", "head": "checkpoint", "variant": "logits/all"}
    state.update(mask_ratio=0.75, progress=0.5, object_mask=None)

    def explore() -> None:
        client.predict(*state.values(), api_name="/explore")

    changes = {
        "training progress": lambda i: state.update(progress=round(0.05 * (i % 20), 2)),
        "mask ratio": lambda i: state.update(mask_ratio=(0.6, 0.75, 0.9)[i % 3]),
        "head": lambda i: state.update(block=str(num_layers - 1), head=("all", "0", "1")[i % 3]),
        "block": lambda i: state.update(block=str(i % num_layers), head="0"),
        "score variant": lambda i: state.update(variant=("softmax/others", "logits/all")[i % 2]),
        "image": lambda i: state.update(image=handle_file(images[(i + 1) % len(images)])),
        "object mask": lambda i: state.update(object_mask=handle_file(object_mask)),
    }
    latencies = {}
    for name, change in changes.items():
        samples = []
        for index in range(repeats):
            change(index)
            samples.append(timed(explore))
        latencies[name] = samples
    rank = [object_mask, object_mask]
    latencies["rank all blocks x heads"] = [
        timed(lambda: client.predict(*map(handle_file, rank), "logits/all", 0.75, 1.0, api_name="/rank"))
    ]
    return latencies


def measure(name: str, checkpoint: str, images: list[str], object_mask: str, repeats: int) -> dict:
    from gradio_client import Client, handle_file

    num_layers = GPAConfig.from_pretrained(checkpoint).num_hidden_layers
    process, url, startup = start_server(checkpoint)
    try:
        client = Client(url, verbose=False)
        first = timed(
            lambda: client.predict(
                handle_file(images[0]), "0", "checkpoint", "logits/all", 0.75, 0.5, None, api_name="/explore"
            )
        )
        latencies = change_latencies(client, images, object_mask, num_layers, repeats)
    finally:
        process.terminate()
        process.wait(timeout=30)
    summary = {change: {"median_s": statistics.median(s), "max_s": max(s)} for change, s in latencies.items()}
    return {"checkpoint": name, "startup_s": startup, "first_answer_s": first, "changes": summary, "raw": latencies}


def write_images(directory: str) -> tuple[list[str], str]:
    """Two scikit-image photos as PNG files, and an object mask (the photo's bright half) for the object share."""
    paths = []
    for name, image in example_images(SKIMAGE_PHOTOS[:2], 0):
        paths.append(os.path.join(directory, f"{name}.png"))
        image.save(paths[-1])
    grey = np.asarray(Image.open(paths[0]).convert("L"))
    object_mask = os.path.join(directory, "object_mask.png")
    Image.fromarray(((grey > np.median(grey)) * 255).astype(np.uint8)).save(object_mask)
    return paths, object_mask


def machine() -> str:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average {load}), no GPU"


def markdown(results: dict) -> str:
    lines = [
        "# GPA explorer: start-up and latency per change on CPU",
        "",
        f"Written by `{results['command']}` on {results['date']}; {results['machine']}; {results['versions']}.",
        "",
        "Start-up: launching `run_scripts/gpa_explorer.py` until its page answers; first answer: the first `/explore` "
        "call after that. Each change: the wall time of a `gradio_client` call to `/explore` that changes one "
        "control (median and max of the calls), as a browser's request sees it, on 127.0.0.1.",
        "",
    ]
    for result in results["results"]:
        lines += [
            f"## {result['checkpoint']}",
            "",
            f"Start-up {result['startup_s']:.1f} s; first answer {result['first_answer_s']:.2f} s.",
            "",
            "| change | median (s) | max (s) |",
            "|---|---|---|",
        ]
        for change, timing in result["changes"].items():
            lines.append(f"| {change} | {timing['median_s']:.2f} | {timing['max_s']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        images, object_mask = write_images(work)
        checkpoints = []
        if os.path.isfile(os.path.join(args.quick_start, "model.safetensors")):
            checkpoints.append((f"quick start ({args.quick_start})", args.quick_start))
        else:
            stand_in = saved_model(GPAConfig(**QUICK_START_ARCHITECTURE), os.path.join(work, "quick_start"))
            checkpoints.append(("quick-start architecture at random init (no quick-start checkpoint)", stand_in))
        if not args.skip_vit_base:
            vit_base = saved_model(GPAConfig(), os.path.join(work, "vit_base"))
            checkpoints.append(("ViT-B/16 at 224 (GPAConfig defaults, random init)", vit_base))
        measured = [measure(name, path, images, object_mask, args.repeats) for name, path in checkpoints]
    arguments = sys.argv[1:] if argv is None else argv
    results = {
        "command": shlex.join(["python", "benchmarks/benchmark_explorer.py", *arguments]),
        "date": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}",
        "machine": machine(),
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, gradio {metadata.version('gradio')}",
        "results": measured,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    output.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
