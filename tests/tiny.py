"""Small ViTMAE / GPA configurations and script arguments shared by the tests: real modules, seconds on a CPU.

The builders of files on disk (image folders, a saved teacher, rotated photos, annotated images) are fixtures in
conftest.py."""

from __future__ import annotations

TINY = dict(
    image_size=28,
    patch_size=4,
    num_channels=1,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    decoder_hidden_size=32,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=4,
    decoder_intermediate_size=64,
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now: each launch or server of a test gets its own, so parallel tests never share
    one."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_kwargs(**overrides) -> dict:
    """TINY with ``overrides`` applied: 49 patches of 4x4 on a 28x28 single-channel image."""
    return {**TINY, **overrides}


def config_overrides(**overrides) -> str:
    """``--config_overrides`` for run_pretrain.py: the architecture of ``tiny_kwargs(**overrides)``.

    The image size and channels are left out: the script takes them from the data.
    """
    fields = tiny_kwargs(**overrides)
    return ",".join(f"{key}={value}" for key, value in fields.items() if key not in ("image_size", "num_channels"))


# The start of a subprocess script that must run as on a machine without this package: importing it fails there.
WITHOUT_THE_PACKAGE = """
import importlib.util
import sys

class BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_gpa" or name.startswith("modeling_gpa."):
            raise ImportError("modeling_gpa is not installed here")

sys.meta_path.insert(0, BlockPackage())
try:
    importlib.util.find_spec("modeling_gpa")
except ImportError:
    pass
else:
    raise SystemExit("the package is still importable")
"""


def script_args(images, output_dir, *extra: str) -> list[str]:
    """run_pretrain.py / run_mim.py flags for a few logged training steps on ``images``/train and ``images``/val."""
    return [
        "--train_dir",
        str(images / "train"),
        "--validation_dir",
        str(images / "val"),
        "--cache_dir",
        str(output_dir.parent / f"{output_dir.name}_cache"),
        "--output_dir",
        str(output_dir),
        "--do_train",
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        *extra,
    ]


def swin_student(image_size: int = 64, seed: int = 0):
    """A seeded SimMIM Swin (``SwinForMaskedImageModeling``) on gray images: patch 4, window 2, embed_dim 16, two
    stages of two blocks (so shifted windows let a masked window see visible patches), decoder stride 8."""
    import torch
    from transformers import SwinConfig, SwinForMaskedImageModeling

    torch.manual_seed(seed)
    config = SwinConfig(
        image_size=image_size,
        patch_size=4,
        num_channels=1,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[1, 2],
        window_size=2,
        encoder_stride=8,
    )
    return SwinForMaskedImageModeling(config)


def check_two_cpu_processes_train_one_model(script: str, args: list[str], output_dir, model_class, port: int) -> None:
    """``accelerate launch`` of ``run_scripts/<script> args`` on two CPU processes, one thread each, saving at step 2:
    both ranks train to step 2 at a total batch of 8 and the saved model is its one checkpoint, ``checkpoint-2``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    root = Path(__file__).resolve().parents[1]
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    command += ["run_scripts/accelerate_configs/cpu_2proc.yaml", "--main_process_port", str(port)]
    command += [f"run_scripts/{script}", *args]
    # One thread per process: two processes share the CPU.
    process = subprocess.run(
        command, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True, capture_output=True, timeout=240
    )
    out = process.stdout + process.stderr
    assert process.returncode == 0, out[-3000:]
    for rank in (0, 1):
        assert f"Process rank: {rank}, device: cpu" in out and f"Process rank {rank}: trained to step 2." in out
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in out
    # The main process lists the image folder; the other one opens what it built.
    assert out.count("that this machine's main process made") == 1
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    torch.testing.assert_close(
        model_class.from_pretrained(output_dir).state_dict(),
        model_class.from_pretrained(output_dir / "checkpoint-2").state_dict(),
    )


def garment_dataset(count: int, seed: int = 0):
    """A ``datasets.Dataset`` of Fashion-MNIST-like rows: a bright 28x28 rectangle of random size on black, plus an
    ``object_mask`` of its left half and a ``label``."""
    import numpy as np
    from datasets import Dataset
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(count):
        image = np.zeros((28, 28), dtype=np.uint8)
        top, left = rng.integers(0, 10, size=2)
        height, width = rng.integers(10, 18, size=2)
        image[top : top + height, left : left + width] = rng.integers(60, 255)
        mask = np.zeros_like(image)
        mask[top : top + height, left : left + width // 2] = 255
        images.append(Image.fromarray(image))
        masks.append(Image.fromarray(mask))
    return Dataset.from_dict({"image": images, "object_mask": masks, "label": list(range(count))})


def garment_model_inputs(dataset, rows):
    """Rows of ``garment_dataset`` as the model takes them, built by hand: (B, 1, 28, 28) pixel values with
    Fashion-MNIST's normalisation and (B, 49) bool 4x4 patches of the ``object_mask`` column."""
    import numpy as np
    import torch

    from modeling_gpa.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD
    from modeling_gpa.data.ground_truth import object_patches

    masks = torch.stack([torch.from_numpy(np.asarray(dataset[i]["object_mask"]) > 0) for i in rows])
    pixels = torch.stack([torch.from_numpy(np.asarray(dataset[i]["image"], dtype=np.float32)) for i in rows])
    return ((pixels / 255.0 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]).unsqueeze(1), object_patches(masks, 4)


class RandomImages:
    """A torch dataset of ``size`` seeded random 1x28x28 images; with ``noise``, a fixed masking noise of
    ``num_patches`` per image (plain MAE masking)."""

    def __init__(self, size: int, noise: bool = False, seed: int = 0, num_patches: int = 16):
        import torch

        generator = torch.Generator().manual_seed(seed)
        self.pixel_values = torch.randn(size, 1, 28, 28, generator=generator)
        self.noise = torch.rand(size, num_patches, generator=generator) if noise else None

    def __len__(self) -> int:
        return len(self.pixel_values)

    def __getitem__(self, index: int) -> dict:
        item = {"pixel_values": self.pixel_values[index]}
        if self.noise is not None:
            item["noise"] = self.noise[index]
        return item


def tiny_training_arguments(tmp_path, **overrides):
    """``GPATrainingArguments`` for a few logged CPU steps of batch 2 in ``tmp_path``, no saving; ``overrides`` win."""
    from modeling_gpa.training.trainer import GPATrainingArguments

    defaults = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        per_device_train_batch_size=2,
        max_steps=4,
        learning_rate=1e-3,
        seed=0,
    )
    return GPATrainingArguments(**{**defaults, **overrides})
