"""Pictures of what GPA sees: the paper's Figure 2 triple, MAE reconstructions, and the Figure 4 recall heat map.

Figure functions take numpy arrays or tensors and return a matplotlib ``Figure`` (nothing is shown or saved here);
``mae_reconstruction`` and ``gpa_scores`` run the model. Figures are built without pyplot, so no display or
backend choice is needed: ``figure.savefig("x.png")`` renders with Agg.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..configuration_gpa import pair
from ..head_selection import teacher_encoder_of
from ..masking import HARD, KEPT, RANDOM, SOFT
from ..teacher import teacher_scores

GROUP_NAMES = {KEPT: "kept", HARD: "hard (top GPA)", SOFT: "soft (GPA-sampled)", RANDOM: "random"}
GROUP_COLOURS = {HARD: "#d62728", SOFT: "#ff9f1c", RANDOM: "#1f77b4"}
# Masked patches in the reconstruction panel: a grey that is neither a black background nor a white garment.
MASKED_GREY = 0.5


def _as_numpy(values) -> np.ndarray:
    return values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def patch_map(values, image_size: int | Sequence[int], patch_size: int | Sequence[int]) -> np.ndarray:
    """(n,) per-patch values in row-major patch order -> (H, W), each patch's value over its pixels."""
    (height, width), (patch_h, patch_w) = pair(image_size), pair(patch_size)
    grid = _as_numpy(values).reshape(height // patch_h, width // patch_w)
    return np.kron(grid, np.ones((patch_h, patch_w), dtype=grid.dtype))


def _show_image(axis, image: np.ndarray, alpha: float = 1.0) -> None:
    """(H, W, C) in [0, 1], C = 1 or 3."""
    if image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", alpha=alpha)
    else:
        axis.imshow(image, interpolation="nearest", alpha=alpha)
    axis.set_xticks([])
    axis.set_yticks([])


def gpa_figure(image, gpa, groups, patch_size: int | Sequence[int], title: str) -> Figure:
    """The paper's Figure 2 triple: image, GPA heat map over it, and the mask the schedule applies.

    Args:
        image: (H, W, C) display image in [0, 1].
        gpa: (n,) raw GPA scores of the image's patches (min-max scaled here for the colour map).
        groups: (n,) ``masking`` groups: 0 kept, 1 hard, 2 soft, 3 random.
    """
    image, gpa, groups = _as_numpy(image), _as_numpy(gpa), _as_numpy(groups).astype(int)
    size = image.shape[:2]
    figure = Figure(figsize=(10.5, 3.9), layout="constrained")
    axes = figure.subplots(1, 3)
    figure.suptitle(title)

    _show_image(axes[0], image)
    axes[0].set_title("image")

    span = float(gpa.max() - gpa.min())
    scaled = (gpa - gpa.min()) / span if span > 0 else np.ones_like(gpa)
    _show_image(axes[1], image)
    heat = axes[1].imshow(patch_map(scaled, size, patch_size), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    figure.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.02, label="GPA (min-max per image)")
    axes[1].set_title("GPA heat map")

    _show_image(axes[2], image, alpha=0.55)
    colours = ListedColormap(["none", GROUP_COLOURS[HARD], GROUP_COLOURS[SOFT], GROUP_COLOURS[RANDOM]])
    axes[2].imshow(patch_map(groups, size, patch_size), cmap=colours, vmin=-0.5, vmax=3.5, alpha=0.75)
    legend = [
        Patch(facecolor=GROUP_COLOURS[g], label=f"{GROUP_NAMES[g]}: {int((groups == g).sum())}")
        for g in (HARD, SOFT, RANDOM)
    ]
    axes[2].legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=8, frameon=False)
    axes[2].set_title(f"mask ({int((groups != KEPT).sum())} of {groups.size} patches)")
    return figure


def reconstruction_figure(original, masked, reconstruction, pasted, title: str) -> Figure:
    """MAE's panel: original, masked input, reconstruction, reconstruction with the visible patches pasted back.

    Each argument is an (H, W, C) display image in [0, 1].
    """
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, 4)
    figure.suptitle(title)
    names = ("original", "masked input", "reconstruction", "reconstruction + visible")
    for axis, panel, name in zip(axes, (original, masked, reconstruction, pasted), names, strict=True):
        _show_image(axis, _as_numpy(panel))
        axis.set_title(name)
    return figure


def recall_heatmap_figure(recall, best_layer: int, best_head: int | None, title: str, average_precision=None) -> Figure:
    """The paper's Figure 4: object recall per block (rows) and head (columns, last "all"), values annotated.

    Args:
        recall: (num_layers, num_heads + 1) object recall.
        best_layer, best_head: the chosen candidate (``best_head=None``: the "all" column), outlined.
        average_precision: optional (num_layers, num_heads + 1) average precision, drawn as a second panel beside
            the recall (it breaks the recall ties), the choice outlined there too.
    """
    panels = [("object recall", _as_numpy(recall))]
    if average_precision is not None:
        panels.append(("average precision", _as_numpy(average_precision)))
    num_layers, num_columns = panels[0][1].shape
    width = max(5.5, 1.6 + 0.62 * num_columns) * len(panels)
    figure = Figure(figsize=(width, 1.6 + 0.42 * num_layers), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    best_column = num_columns - 1 if best_head is None else best_head
    for axis, (label, values) in zip(axes, panels, strict=True):
        image = axis.imshow(values, cmap="viridis", aspect="auto")
        figure.colorbar(image, ax=axis, label=label)
        middle = (values.min() + values.max()) / 2
        for layer in range(num_layers):
            for column in range(num_columns):
                value = values[layer, column]
                colour = "black" if value > middle else "white"
                axis.text(column, layer, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
        axis.add_patch(
            Rectangle((best_column - 0.5, best_layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5)
        )
        axis.set_xticks(range(num_columns), [*map(str, range(num_columns - 1)), "all"])
        axis.set_yticks(range(num_layers), [str(i) for i in range(num_layers)])
        axis.set_xlabel("head")
        axis.set_ylabel("block")
    if len(panels) == 1:
        axes[0].set_title(title, fontsize=9)
    else:
        figure.suptitle(title, fontsize=9)
    return figure


def configured_layer_head(model: torch.nn.Module) -> tuple[int, int | None]:
    """The scoring block and head as non-negative indices: a GPA model's config, else the last block's last head."""
    encoder = teacher_encoder_of(model)
    num_layers, num_heads = len(encoder.layers), encoder.config.num_attention_heads
    if hasattr(model.config, "resolved_gpa_layer"):
        return model.config.resolved_gpa_layer(num_layers), model.config.resolved_gpa_head(num_heads)
    return num_layers - 1, num_heads - 1


@torch.no_grad()
def gpa_scores(model: torch.nn.Module, pixel_values: torch.Tensor, *, layer: int, head: int | None) -> torch.Tensor:
    """(B, C, H, W) -> (B, n) raw GPA of the model's teacher (or encoder) at ``layer`` and ``head`` (None: all)."""
    encoder = teacher_encoder_of(model)
    weight = encoder.embeddings.patch_embeddings.projection.weight
    return teacher_scores(
        encoder,
        pixel_values.to(weight.device, weight.dtype),
        layer=layer,
        head=head,
        score=getattr(model.config, "gpa_score", "logits"),
        queries=getattr(model.config, "gpa_queries", "all"),
    )


@torch.no_grad()
def mae_reconstruction(model: torch.nn.Module, pixel_values: torch.Tensor, noise: torch.Tensor) -> dict:
    """Runs a ViTMAE / GPA pretraining model with ``noise`` and returns its reconstruction in input space.

    With ``norm_pix_loss`` the model predicts each patch normalised by its own mean and variance; as in run_mae's
    visualisation those statistics are taken from the original image's patches to undo it.

    Returns:
        ``reconstruction`` and ``pasted`` (visible patches from the input): (B, C, H, W) in the normalised space of
        ``pixel_values``; ``mask``: (B, H, W) bool, True on masked pixels.
    """
    weight = model.vit.embeddings.patch_embeddings.projection.weight
    pixel_values = pixel_values.to(weight.device, weight.dtype)
    outputs = model(pixel_values, noise=noise.to(weight.device))
    logits = outputs.logits.float()
    if model.config.norm_pix_loss:
        target = model.patchify(pixel_values).float()
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        logits = logits * (var + 1.0e-6) ** 0.5 + mean
    size = tuple(pixel_values.shape[2:])
    reconstruction = model.unpatchify(logits, original_image_size=size)
    mask_patches = outputs.mask.float().unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    mask = model.unpatchify(mask_patches, original_image_size=size)[:, 0] > 0.5
    pasted = torch.where(mask.unsqueeze(1), reconstruction, pixel_values.float())
    return {"reconstruction": reconstruction.cpu(), "pasted": pasted.cpu(), "mask": mask.cpu()}


def grey_out(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, C) display image with the (H, W) ``mask`` pixels set to mid-grey."""
    return np.where(mask[..., None], MASKED_GREY, image)


__all__ = [
    "configured_layer_head",
    "gpa_figure",
    "gpa_scores",
    "grey_out",
    "mae_reconstruction",
    "patch_map",
    "recall_heatmap_figure",
    "reconstruction_figure",
]
