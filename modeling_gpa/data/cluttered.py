"""Cluttered Fashion-MNIST: garments pasted at a random position and scale onto natural textures.

On plain Fashion-MNIST a garment touches ~69% of the 4-pixel patches, so "mask the object" is close to random
masking and an attention-guided mask cannot help. Here each 28x28 garment is resized and pasted onto a random crop
of one of scikit-image's bundled photos and textures (brick, grass, gravel, camera, coins, ...), turned to
grayscale, dimmed to `background_strength` and blurred. The garment then covers ~26% of the 8-pixel patches of a
56x56 canvas (see `object_share`), and a per-pixel object mask gives the ground truth for few-shot head selection
and object-recall metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter

from .fashion_mnist import FASHION_MNIST_CLASSES, fashion_mnist_arrays

if TYPE_CHECKING:
    import datasets

TEXTURE_NAMES = (
    "brick",
    "grass",
    "gravel",
    "camera",
    "coins",
    "moon",
    "text",
    "page",
    "clock",
    "rocket",
    "coffee",
    "astronaut",
    "chelsea",
)
# Bumped whenever the generator changes, so stale caches are never reused.
GENERATOR_VERSION = 1
# Random parameters are drawn per block of this many images from a generator seeded with (seed, block index), so
# image i depends only on (seed, i): a subset (max_train_samples) is a prefix of the full set.
_BLOCK = 1024
# Garment pixels reach full opacity at this intensity. Fashion-MNIST garments have dark interiors (~10% of their
# pixels are below 32); with alpha = intensity / 255 the texture would show through them.
_OPAQUE_AT = 32.0


@lru_cache(maxsize=1)
def textures() -> tuple[np.ndarray, np.ndarray]:
    """The bundled scikit-image photos as one zero-padded float32 stack (T, H_max, W_max) in [0, 1], plus their
    (T, 2) heights and widths. Images that need a download are skipped."""
    import skimage.data
    from skimage.color import rgb2gray

    images = []
    for name in TEXTURE_NAMES:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception:  # skimage raises various errors (network, missing pooch) for data it must download
            continue
        if image.ndim == 3:
            image = rgb2gray(image[..., :3])
        images.append(image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0))
    if not images:
        raise RuntimeError("no scikit-image sample images available: reinstall scikit-image (pip install scikit-image)")
    sizes = np.array([image.shape for image in images])
    stack = np.zeros((len(images), *sizes.max(axis=0)), dtype=np.float32)
    for index, image in enumerate(images):
        stack[index, : image.shape[0], : image.shape[1]] = image
    return stack, sizes


def _bilinear_matrices(coords: np.ndarray, size: int) -> np.ndarray:
    """Interpolation weights (..., S, size) that sample a length-`size` axis at fractional `coords` (..., S)."""
    floor = np.clip(np.floor(coords), 0, size - 2).astype(np.int64)
    frac = np.clip(coords - floor, 0.0, 1.0)[..., None]
    grid = np.arange(size)
    return (1.0 - frac) * (grid == floor[..., None]) + frac * (grid == floor[..., None] + 1)


def _draw_parameters(seed: int, count: int, scale_range: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per-image random parameters, drawn block by block so image i depends only on (seed, i)."""
    num_textures = len(textures()[1])
    blocks = []
    for block in range((count + _BLOCK - 1) // _BLOCK):
        rng = np.random.default_rng([seed, block])
        blocks.append(
            {
                "texture": rng.integers(0, num_textures, _BLOCK),
                "crop": rng.uniform(1.0, 2.0, _BLOCK),  # crop side in canvas sizes (zoom out up to 2x)
                "crop_y": rng.uniform(0.0, 1.0, _BLOCK),
                "crop_x": rng.uniform(0.0, 1.0, _BLOCK),
                "contrast": rng.uniform(0.5, 1.0, _BLOCK),
                "scale": rng.uniform(*scale_range, _BLOCK),
                "paste_y": rng.uniform(0.0, 1.0, _BLOCK),
                "paste_x": rng.uniform(0.0, 1.0, _BLOCK),
            }
        )
    return {key: np.concatenate([b[key] for b in blocks])[:count] for key in blocks[0]} if blocks else {}


def _backgrounds(params: dict[str, np.ndarray], canvas_size: int, strength: float, blur: float) -> np.ndarray:
    """(n, S, S) float backgrounds in [0, 255 * strength]: bilinear crops of the textures, contrast-stretched."""
    stack, sizes = textures()
    heights, widths = sizes[params["texture"], 0], sizes[params["texture"], 1]
    crop = np.minimum(params["crop"] * canvas_size, np.minimum(heights, widths) - 1.0)
    top = params["crop_y"] * (heights - 1 - crop)
    left = params["crop_x"] * (widths - 1 - crop)
    steps = (np.arange(canvas_size) + 0.5) / canvas_size
    rows = top[:, None] + steps[None, :] * crop[:, None]  # (n, S), inside [0, H - 1)
    cols = left[:, None] + steps[None, :] * crop[:, None]
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    # float32 weights keep the four texture gathers (the bulk of the cost) in single precision.
    fr = (rows - r0).astype(np.float32)[:, :, None]
    fc = (cols - c0).astype(np.float32)[:, None, :]
    t = params["texture"][:, None, None]
    r0, c0 = r0[:, :, None], c0[:, None, :]
    background = (
        stack[t, r0, c0] * (1 - fr) * (1 - fc)
        + stack[t, r0, c0 + 1] * (1 - fr) * fc
        + stack[t, r0 + 1, c0] * fr * (1 - fc)
        + stack[t, r0 + 1, c0 + 1] * fr * fc
    )
    if blur > 0:
        background = gaussian_filter(background, sigma=(0, blur, blur))
    low = background.min(axis=(1, 2), keepdims=True)
    span = np.maximum(background.max(axis=(1, 2), keepdims=True) - low, 1e-6)
    return (background - low) / span * (params["contrast"][:, None, None] * strength * 255.0)


def _pasted_garments(images: np.ndarray, params: dict[str, np.ndarray], canvas_size: int) -> np.ndarray:
    """(n, S, S) float garments resized (bilinear) to `scale * S / 2` pixels at their random position, 0 elsewhere."""
    n, height, width = images.shape
    padded = np.zeros((n, height + 2, width + 2), dtype=np.float64)  # zero border: samples outside the garment give 0
    padded[:, 1:-1, 1:-1] = images
    box = params["scale"] * canvas_size / 2
    room = np.maximum(canvas_size - box, 0.0)
    top, left = params["paste_y"] * room, params["paste_x"] * room
    centers = np.arange(canvas_size) + 0.5
    # Canvas pixel centre -> garment pixel coordinate (+1 for the padding); coordinates beyond the padded garment are
    # clamped onto its zero border by `_bilinear_matrices`.
    rows = (centers[None, :] - top[:, None]) * (height / box[:, None]) - 0.5 + 1
    cols = (centers[None, :] - left[:, None]) * (width / box[:, None]) - 0.5 + 1
    weights_y = _bilinear_matrices(rows, height + 2)  # (n, S, H + 2)
    weights_x = _bilinear_matrices(cols, width + 2)  # (n, S, W + 2)
    return np.einsum("nyi,nij,nxj->nyx", weights_y, padded, weights_x, optimize=True)


def make_cluttered(
    images: np.ndarray,
    seed: int,
    canvas_size: int = 56,
    scale_range: tuple[float, float] = (0.7, 1.2),
    background_strength: float = 0.35,
    background_blur: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste each garment onto a textured canvas.

    Args:
        images: (N, 28, 28) uint8 garments on a black background.
        seed: all randomness; image i depends only on (seed, i, the garment), so results are reproducible and a prefix
            of the images gives a prefix of the output.
        canvas_size: S, the output side (56 -> 7x7 patches of 8; 112 -> 14x14).
        scale_range: garment side as a fraction of S / 2 (28 px on the default canvas), drawn uniformly.
        background_strength: brightest background value as a fraction of 255 (times a random contrast in [0.5, 1]).
        background_blur: Gaussian sigma in pixels applied to the background (0: none); smooths aliasing of the
            downsampled textures so the background is learnable rather than noise.

    Returns:
        (N, S, S) uint8 images and (N, S, S) bool object masks (pixels where the resized garment is > 0).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W) uint8, got {images.dtype} {images.shape}")
    if not 0 < scale_range[0] <= scale_range[1] <= 2:
        raise ValueError(f"scale_range={scale_range} must satisfy 0 < low <= high <= 2 (the garment must fit)")
    if not 0 <= background_strength <= 1:
        raise ValueError(f"background_strength={background_strength} must be in [0, 1]")
    if canvas_size < 8 or background_blur < 0:
        raise ValueError(f"canvas_size={canvas_size} must be >= 8 and background_blur={background_blur} >= 0")
    params = _draw_parameters(seed, len(images), scale_range)
    canvases = np.zeros((len(images), canvas_size, canvas_size), dtype=np.uint8)
    masks = np.zeros((len(images), canvas_size, canvas_size), dtype=bool)
    for start in range(0, len(images), _BLOCK):
        block = slice(start, start + _BLOCK)
        block_params = {key: value[block] for key, value in params.items()}
        garment = _pasted_garments(images[block], block_params, canvas_size)
        background = _backgrounds(block_params, canvas_size, background_strength, background_blur)
        alpha = np.clip(garment / _OPAQUE_AT, 0.0, 1.0)
        canvases[block] = np.rint(np.clip(alpha * garment + (1 - alpha) * background, 0, 255)).astype(np.uint8)
        masks[block] = np.rint(garment) > 0
    return canvases, masks


def object_share(masks: np.ndarray, patch_size: int) -> float:
    """Mean fraction of (patch_size x patch_size) patches that contain any object pixel; masks (N, S, S) bool.

    Measured on the 10k Fashion-MNIST test images with the default generator: 0.26 for cluttered Fashion-MNIST at
    canvas 56 with patch 8 (7x7 grid); 0.20 at canvas 112 with patch 8 (14x14), 0.27 with patch 16; against 0.69 for
    plain Fashion-MNIST at patch 4.
    """
    masks = np.asarray(masks, dtype=bool)
    n, height, width = masks.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"mask size {height}x{width} is not a multiple of patch_size={patch_size}")
    grid = masks.reshape(n, height // patch_size, patch_size, width // patch_size, patch_size)
    return float(grid.any(axis=(2, 4)).mean()) if n else 0.0


def _cache_path(cache_dir: str | None, params: dict) -> Path:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "modeling_gpa"
    return root / "cluttered_fashion_mnist" / key


def load_cluttered_fashion_mnist(
    cache_dir: str | None = None,
    seed: int = 0,
    canvas_size: int = 56,
    background_strength: float = 0.35,
    background_blur: float = 1.0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
) -> datasets.DatasetDict:
    """Cluttered Fashion-MNIST: "train", "test" and "validation" (= "test").

    Columns: `image` (PIL "L", canvas_size^2), `label` (ClassLabel), `object_mask` (PIL "L", 0 or 255). Built from the
    first `max_*_samples` images of the matching Fashion-MNIST split and cached with `save_to_disk` under
    `<cache_dir or ~/.cache/modeling_gpa>/cluttered_fashion_mnist/<hash of the parameters>`; later calls load it.
    """
    params = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "canvas_size": canvas_size,
        "background_strength": background_strength,
        "background_blur": background_blur,
        "max_train_samples": max_train_samples,
        "max_test_samples": max_test_samples,
    }
    # Imported here: the arrays above (make_cluttered) serve benchmarks on machines without `datasets`.
    import datasets

    path = _cache_path(cache_dir, params)
    if not (path / "dataset_dict.json").is_file():
        _build(path, seed, canvas_size, background_strength, background_blur, max_train_samples, max_test_samples)
    dataset = datasets.load_from_disk(str(path))
    dataset["validation"] = dataset["test"]
    return dataset


def _build(
    path: Path,
    seed: int,
    canvas_size: int,
    background_strength: float,
    background_blur: float,
    max_train_samples: int | None,
    max_test_samples: int | None,
) -> None:
    """Generate both splits and save them to `path` atomically (written beside it, then renamed)."""
    import datasets

    from .arrays import arrays_to_dataset

    splits = {}
    seeds = dict(zip(("train", "test"), np.random.SeedSequence(seed).generate_state(2).tolist(), strict=True))
    for split, limit in (("train", max_train_samples), ("test", max_test_samples)):
        images, labels = fashion_mnist_arrays(split)
        images, labels = images[:limit], labels[:limit]
        canvases, masks = make_cluttered(
            images,
            seeds[split],
            canvas_size=canvas_size,
            background_strength=background_strength,
            background_blur=background_blur,
        )
        columns = {"image": canvases, "label": labels, "object_mask": masks.astype(np.uint8) * 255}
        splits[split] = arrays_to_dataset(columns, FASHION_MNIST_CLASSES, png_columns=("object_mask",))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    datasets.DatasetDict(splits).save_to_disk(str(staging))
    try:
        os.replace(staging, path)
    except OSError:  # another process finished the same build first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
