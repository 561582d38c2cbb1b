"""What a checkpoint's GPA does to one image, for any block, head, score, mask ratio and training progress.

The logic behind ``run_scripts/gpa_explorer.py``: tensors in, numpy arrays out, no gradio. Scores come from
``teacher_scores`` (``GPAForPreTraining.compute_gpa`` for the checkpoint's own choice), masks from
``mask_groups`` / ``noise_from_mask`` (Eq. 6), reconstructions from ``visualization.mae_reconstruction``.

    explorer = Explorer.from_pretrained("outputs/gpa-fashion-mnist")
    view = explorer.explore(image, layer=3, head=None, progress=0.5)   # view.heat_map: (H, W, 3) uint8
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from ..data.ground_truth import object_patches as pixel_mask_to_patches
from ..data.image_inputs import ImageSettings
from ..gpa import minmax_normalize
from ..head_selection import every_head_scores, load_scoring_model, teacher_encoder_of
from ..masking import (
    HARD,
    KEPT,
    PAPER_SCHEDULE,
    RANDOM,
    SOFT,
    MaskSchedule,
    mask_counts,
    mask_groups,
    noise_from_mask,
    num_masked_patches,
)
from ..teacher import teacher_scores
from .visualization import GROUP_COLOURS, configured_layer_head, mae_reconstruction, patch_map

CHECKPOINT_CHOICE = "checkpoint"
ALL_HEADS = "all"
# GPA's column sums (Eq. 1-2: logits or softmax, over all queries or the others'), and the CLS query's row alone
# (``queries="cls"``: AttMask's score, ``mask_method="cls_attention"``).
SCORE_VARIANTS = (
    ("logits", "all"),
    ("logits", "others"),
    ("softmax", "all"),
    ("softmax", "others"),
    ("softmax", "cls"),
    ("logits", "cls"),
)
# How strongly the heat map and the mask colours cover the image.
HEAT_ALPHA = 0.6
MASK_ALPHA = 0.75


@dataclass
class View:
    """One image seen by one (block, head, score): arrays at the model's resolution, images (H, W, 3) uint8.

    ``gpa``: (n,) raw scores; ``groups``: (n,) ``masking`` groups (0 kept, 1 hard, 2 soft, 3 random);
    ``reconstruction``: MAE's output with the visible patches pasted back (None for a ViT without decoder);
    ``object_share`` / ``random_object_share``: share of the object patches this mask hides, and the share a uniform
    random mask of the same size hides in expectation (None without an object mask).
    """

    layer: int
    head: int | None
    gpa: np.ndarray
    groups: np.ndarray
    counts: dict[str, int]
    image: np.ndarray
    heat_map: np.ndarray
    mask: np.ndarray
    reconstruction: np.ndarray | None
    object_share: float | None = None
    random_object_share: float | None = None


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float in [0, 1], C = 1 or 3 -> (H, W, 3) uint8."""
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def heat_map_image(image: np.ndarray, gpa: torch.Tensor, patch_size: int) -> np.ndarray:
    """(H, W, C) display image in [0, 1] and (n,) raw GPA -> (H, W, 3) uint8, min-max GPA in ``inferno`` over it."""
    scaled = minmax_normalize(gpa.view(1, -1))[0]
    heat = colormaps["inferno"](patch_map(scaled, image.shape[:2], patch_size))[..., :3]
    rgb = to_uint8_rgb(image).astype(np.float32) / 255
    return to_uint8_rgb((1 - HEAT_ALPHA) * rgb + HEAT_ALPHA * heat)


def mask_image(image: np.ndarray, groups: torch.Tensor, patch_size: int) -> np.ndarray:
    """(H, W, C) display image and (n,) groups -> (H, W, 3) uint8: hard, soft and random patches in their colours."""
    rgb = to_uint8_rgb(image).astype(np.float32) / 255
    pixel_groups = patch_map(groups.long().numpy(), image.shape[:2], patch_size)
    palette = np.zeros((4, 3), dtype=np.float32)
    for group in (HARD, SOFT, RANDOM):
        palette[group] = to_rgb(GROUP_COLOURS[group])
    coloured = (1 - MASK_ALPHA) * rgb + MASK_ALPHA * palette[pixel_groups]
    return to_uint8_rgb(np.where((pixel_groups == KEPT)[..., None], rgb, coloured))


def group_counts(groups: torch.Tensor) -> dict[str, int]:
    """(n,) groups -> number of hard, soft and random patches (the ``masking`` groups)."""
    return {name: int((groups == group).sum()) for name, group in (("hard", HARD), ("soft", SOFT), ("random", RANDOM))}


def hidden_object_share(groups: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """(B, n) groups and (B, n) bool object patches -> (B,) share of each image's object patches the mask hides."""
    hidden = (groups != KEPT) & objects
    return hidden.sum(dim=-1) / objects.sum(dim=-1).clamp_min(1)


def figure_to_array(figure: Figure, dpi: int = 100) -> np.ndarray:
    """A matplotlib figure rendered with Agg -> (H, W, 3) uint8."""
    canvas = FigureCanvasAgg(figure)
    figure.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def upscaled(image: np.ndarray, min_side: int) -> np.ndarray:
    """(H, W, 3) -> the same image enlarged by the smallest integer factor that makes its short side >= ``min_side``."""
    factor = max(1, -(-min_side // min(image.shape[:2])))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


class Explorer:
    """A loaded GPA / ViTMAE / ViT checkpoint and the image settings it was trained with."""

    def __init__(self, model: torch.nn.Module, settings: ImageSettings, name: str = "model"):
        self.model = model.eval()
        self.settings = settings
        self.name = name
        self.encoder = teacher_encoder_of(model)
        self.num_layers = len(self.encoder.layers)
        self.num_heads = self.encoder.config.num_attention_heads
        self.patch_size = int(self.encoder.config.patch_size)
        self.num_patches = self.encoder.embeddings.patch_embeddings.num_patches
        self.checkpoint_layer, self.checkpoint_head = configured_layer_head(model)
        config = model.config
        self.mask_ratio = float(getattr(config, "mask_ratio", 0.75))
        self.score = getattr(config, "gpa_score", "logits")
        self.queries = getattr(config, "gpa_queries", "all")
        self.schedule = MaskSchedule.from_config(config) if hasattr(config, "hard_ratio_end") else PAPER_SCHEDULE

    @classmethod
    def from_pretrained(cls, model_name_or_path: str) -> Explorer:
        """Loads a checkpoint directory or Hub id (safetensors only) with its image processor's normalisation."""
        model = load_scoring_model(model_name_or_path)
        settings = ImageSettings.from_pretrained(model_name_or_path, model.config)
        return cls(model, settings, os.path.basename(os.path.normpath(model_name_or_path)))

    @property
    def has_decoder(self) -> bool:
        return hasattr(self.model, "decoder")

    def score_variants(self) -> list[tuple[str, str]]:
        """Every (score, queries) pair, the checkpoint's own first."""
        own = (self.score, self.queries)
        return [own, *(variant for variant in SCORE_VARIANTS if variant != own)]

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """Any PIL image -> (1, C, H, W) normalised at the model's size."""
        return self.settings.to_pixel_values([image])

    def object_patches(self, object_mask: Image.Image) -> torch.Tensor:
        """An object mask image (object = bright pixels) -> (1, n) bool object patches at the model's grid."""
        height, width = self.settings.image_size
        grey = np.asarray(object_mask.convert("L").resize((width, height), Image.Resampling.NEAREST))
        return pixel_mask_to_patches(torch.from_numpy(grey > 127)[None], self.patch_size)

    def resolve(self, layer: int | None, head: int | str | None) -> tuple[int, int | None]:
        """(block, head) as the model reads them: ``head`` ``"checkpoint"`` takes the checkpoint's block and head,
        ``"all"`` or None the sum of heads; a block or head out of range raises one line."""
        if head == CHECKPOINT_CHOICE:
            return self.checkpoint_layer, self.checkpoint_head
        if not _is_index(layer, self.num_layers):
            raise ValueError(f"block {layer} is out of range: the teacher has blocks 0 to {self.num_layers - 1}.")
        if head in (None, ALL_HEADS):
            return int(layer), None
        if not _is_index(head, self.num_heads):
            raise ValueError(f"head {head} is out of range: the teacher has heads 0 to {self.num_heads - 1}.")
        return int(layer), int(head)

    @torch.no_grad()
    def scores(
        self, pixel_values: torch.Tensor, layer: int, head: int | None, score: str, queries: str
    ) -> torch.Tensor:
        """(B, C, H, W) -> (B, n) raw GPA; the checkpoint's own block, head and score through ``compute_gpa``."""
        own = (layer, head, score, queries) == (self.checkpoint_layer, self.checkpoint_head, self.score, self.queries)
        if own and hasattr(self.model, "compute_gpa"):
            return self.model.compute_gpa(pixel_values).cpu()
        weight = self.encoder.embeddings.patch_embeddings.projection.weight
        batch = pixel_values.to(weight.device, weight.dtype)
        return teacher_scores(self.encoder, batch, layer=layer, head=head, score=score, queries=queries).cpu()

    def mask_groups(self, gpa: torch.Tensor, mask_ratio: float, progress: float, seed: int = 0) -> torch.Tensor:
        """(B, n) raw GPA -> (B, n) Eq. 6 groups at ``progress`` with the checkpoint's schedule."""
        _check_fraction("mask ratio", mask_ratio, open_interval=True)
        _check_fraction("training progress", progress, open_interval=False)
        generator = torch.Generator().manual_seed(seed)
        len_mask = num_masked_patches(gpa.shape[1], mask_ratio)
        return mask_groups(gpa, len_mask, progress, self.schedule, generator=generator)

    def expected_counts(self, mask_ratio: float, progress: float) -> dict[str, int]:
        """Eq. 6's hard, soft and random counts for this model's number of patches."""
        counts = mask_counts(self.num_patches, mask_ratio, progress, self.schedule)
        return dict(zip(("hard", "soft", "random"), counts, strict=True))

    def explore(
        self,
        image: Image.Image,
        *,
        layer: int | None = None,
        head: int | str | None = CHECKPOINT_CHOICE,
        score: str | None = None,
        queries: str | None = None,
        mask_ratio: float | None = None,
        progress: float = 1.0,
        object_mask: Image.Image | None = None,
        seed: int = 0,
    ) -> View:
        """Heat map, Eq. 6 mask, reconstruction and (with ``object_mask``) the hidden object share of one image."""
        layer, head = self.resolve(layer, head)
        mask_ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        pixel_values = self.pixel_values(image)
        gpa = self.scores(pixel_values, layer, head, score or self.score, queries or self.queries)
        groups = self.mask_groups(gpa, mask_ratio, progress, seed)
        display = self.settings.to_display(pixel_values)[0]
        reconstruction = None
        if self.has_decoder:
            noise = noise_from_mask(groups != KEPT, generator=torch.Generator().manual_seed(seed))
            output = mae_reconstruction(self.model, pixel_values, noise)
            reconstruction = to_uint8_rgb(self.settings.to_display(output["pasted"])[0])
        view = View(
            layer=layer,
            head=head,
            gpa=gpa[0].numpy(),
            groups=groups[0].numpy(),
            counts=group_counts(groups[0]),
            image=to_uint8_rgb(display),
            heat_map=heat_map_image(display, gpa[0], self.patch_size),
            mask=mask_image(display, groups[0], self.patch_size),
            reconstruction=reconstruction,
        )
        if object_mask is not None:
            objects = self.object_patches(object_mask)
            view.object_share = float(hidden_object_share(groups, objects)[0])
            view.random_object_share = num_masked_patches(self.num_patches, mask_ratio) / self.num_patches
        return view

    @torch.no_grad()
    def rank_heads(
        self,
        image: Image.Image,
        object_mask: Image.Image,
        *,
        score: str | None = None,
        queries: str | None = None,
        mask_ratio: float | None = None,
        progress: float = 1.0,
        seed: int = 0,
    ) -> torch.Tensor:
        """(num_layers, num_heads + 1) share of the object that each block x head's Eq. 6 mask hides (last column:
        the sum of heads): few-shot selection on one image, at this mask ratio and progress."""
        mask_ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        weight = self.encoder.embeddings.patch_embeddings.projection.weight
        batch = self.pixel_values(image).to(weight.device, weight.dtype)
        every = every_head_scores(self.encoder, batch, score=score or self.score, queries=queries or self.queries)
        table = torch.stack([scores[0].cpu() for _, _, scores in every])
        groups = self.mask_groups(table, mask_ratio, progress, seed)
        shares = hidden_object_share(groups, self.object_patches(object_mask).expand_as(groups))
        return shares.view(self.num_layers, self.num_heads + 1)


def _is_index(value: int | str | None, size: int) -> bool:
    return value is not None and str(value).isdigit() and int(value) < size


def _check_fraction(name: str, value: float, *, open_interval: bool) -> None:
    inside = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not inside:
        bounds = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} {value!r} is invalid; allowed values: a number in {bounds}.")


__all__ = [
    "ALL_HEADS",
    "CHECKPOINT_CHOICE",
    "Explorer",
    "View",
    "figure_to_array",
    "group_counts",
    "heat_map_image",
    "hidden_object_share",
    "mask_image",
    "to_uint8_rgb",
    "upscaled",
]
