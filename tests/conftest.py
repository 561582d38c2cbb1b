"""Shared pytest fixtures."""

import json
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


# Builders of files on disk. Each fixture hands out its builder, so module-scoped fixtures and parametrized tests call
# it with their own folder and settings.


@pytest.fixture(scope="session")
def write_image_folders():
    """``write(root, draw, counts=(("train", 16), ("val", 4)))``: ``count`` gray PNGs per split,
    ``root/<split>/class<index % 2>/<index:02d>.png``, each image's (H, W) uint8 pixels ``draw(rng)`` from one
    generator seeded 0; returns ``root``."""

    def write(root: Path, draw, counts=(("train", 16), ("val", 4))) -> Path:
        rng = np.random.default_rng(0)
        for split, count in counts:
            for index in range(count):
                folder = root / split / f"class{index % 2}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(draw(rng), "L").save(folder / f"{index:02d}.png")
        return root

    return write


@pytest.fixture(scope="session")
def save_mae_teacher():
    """``save(path, num_hidden_layers)``: a seeded ViTMAE on 64 px gray images with 16 px patches (a 4x4 grid, coarser
    than the SimMIM students' mask grid) saved at ``path``; returns ``path`` as a string."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    def save(path: Path, num_hidden_layers: int) -> str:
        torch.manual_seed(0)
        config = ViTMAEConfig(
            image_size=64,
            patch_size=16,
            num_channels=1,
            hidden_size=32,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=2,
            intermediate_size=64,
            decoder_hidden_size=16,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=32,
        )
        ViTMAEForPreTraining(config).save_pretrained(path)
        return str(path)

    return save


@pytest.fixture(scope="session")
def save_rotated():
    """``save(upright, orientation, path)``: the PIL image ``upright`` saved as a camera would, its pixels as stored
    (turned by the inverse of EXIF orientation ``orientation``, 1-8) plus the EXIF tag that turns them upright again."""
    # The transpose that stores an upright image so that orientation N turns it upright again.
    stored_as = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }

    def save(upright: Image.Image, orientation: int, path: Path) -> None:
        stored = upright.transpose(stored_as[orientation]) if orientation != 1 else upright
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored.save(path, exif=exif.tobytes())

    return save


@pytest.fixture(scope="session")
def annotated_folder():
    """``write(directory)``: six 28x28 images of a bright rectangle in ``directory``, masks/<stem>.png and boxes.json
    describing the same rectangles."""
    from tiny import garment_dataset

    def write(directory: Path) -> None:
        (directory / "masks").mkdir(parents=True)
        boxes = {}
        for index, row in enumerate(garment_dataset(6, seed=3).remove_columns("object_mask")):
            image = np.asarray(row["image"])
            ys, xs = np.nonzero(image)
            row["image"].save(directory / f"img{index}.png")
            Image.fromarray((image > 0).astype(np.uint8) * 255).save(directory / "masks" / f"img{index}.png")
            boxes[f"img{index}.png"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        (directory / "boxes.json").write_text(json.dumps({name: [box] for name, box in boxes.items()}))

    return write
