"""Shared pytest fixtures."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The test models are tiny: one thread per process is fastest, and subprocesses (accelerate launches) inherit it,
# so parallel processes never oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fashion_mnist():
    """The Fashion-MNIST DatasetDict ("train" 60k, "test" 10k), loaded once per test session."""
    from modeling_gpa.data import load_fashion_mnist

    return load_fashion_mnist()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """An imagefolder tree with 12 readable images in two classes, of mixed modes and sizes (PNG and JPEG)."""
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "P"]
    for index in range(12):
        label = "cat" if index % 2 else "dog"
        folder = tmp_path / "train" / label
        folder.mkdir(parents=True, exist_ok=True)
        size = (40 + 4 * index, 36 + 2 * index)
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
        mode = modes[index % len(modes)]
        image = image.convert(mode) if mode != "P" else image.quantize(16)
        suffix = "jpg" if mode in ("RGB", "L") else "png"
        image.save(folder / f"{index:02d}.{suffix}")
    return tmp_path / "train"


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    """Photo JPEGs (RGB, grayscale, CMYK), a truncated JPEG whose header still reads, and the formats the pipelines
    leave to PIL: an RGB PNG, a 16-bit grayscale PNG and a PGM."""
    import skimage.data

    coffee, chelsea, camera = skimage.data.coffee(), skimage.data.chelsea(), skimage.data.camera()
    paths = {name: tmp_path / f"{name}.jpg" for name in ("coffee", "chelsea", "gray", "cmyk", "truncated")}
    Image.fromarray(coffee).save(paths["coffee"], quality=90)
    Image.fromarray(chelsea).save(paths["chelsea"], quality=90)
    Image.fromarray(chelsea).convert("L").save(paths["gray"], quality=90)
    Image.fromarray(coffee).convert("CMYK").save(paths["cmyk"], quality=90)
    paths["truncated"].write_bytes(paths["coffee"].read_bytes()[:2000])
    paths["png"] = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()[::2, ::2]).save(paths["png"])
    paths["png16"] = tmp_path / "deep.png"
    Image.fromarray((camera.astype(np.uint16) * 257)[::4, ::4]).save(paths["png16"])
    paths["pgm"] = tmp_path / "camera.pgm"
    Image.fromarray(camera[::4, ::4]).save(paths["pgm"])
    return paths
