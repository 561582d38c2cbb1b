"""The GPA explorer's Gradio page: a thin layer over ``tools.explorer`` (needs the ``demo`` extra).

Two endpoints: ``/explore`` (heat map, Eq. 6 mask, reconstruction and the numbers behind them, on every change of
the image or a control) and ``/rank`` (every block x head by the share of the uploaded object its mask hides).
"""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from ..data.image_inputs import SKIMAGE_PHOTOS, example_images
from ..head_selection import candidate_name
from .explorer import ALL_HEADS, CHECKPOINT_CHOICE, SCORE_VARIANTS, Explorer, figure_to_array, upscaled
from .visualization import recall_heatmap_figure

# Images are shown at least this many pixels high: a 28x28 Fashion-MNIST model's patches stay visible as squares.
DISPLAY_SIDE = 224
NUM_FASHION_MNIST = 3
TOP_CANDIDATES = 10
# Half-way through training, Eq. 6's default schedule has hard, soft and random patches all in the mask.
START_PROGRESS = 0.5
# Small inputs (a 28x28 garment) fill their panel, pixels kept sharp.
CSS = "#image img, #object-mask img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"


def _variant_key(score: str, queries: str) -> str:
    return f"{score}/{queries}"


def _variant_label(score: str, queries: str) -> str:
    if queries == "cls":
        return f"CLS attention (AttMask), {score}"
    return f"GPA, {score}, {queries} queries"


def _variant(key: str) -> tuple[str, str]:
    """``"logits/all"`` -> ("logits", "all"); anything else raises one line."""
    score, _, queries = str(key).partition("/")
    if (score, queries) not in SCORE_VARIANTS:
        allowed = ", ".join(_variant_key(*variant) for variant in SCORE_VARIANTS)
        raise ValueError(f"score {key!r} is invalid; allowed values: {allowed}.")
    return score, queries


def _head_name(head: int | None) -> str:
    return "sum of heads" if head is None else f"head {head}"


def _shown(image: np.ndarray | None) -> np.ndarray | None:
    return None if image is None else upscaled(image, DISPLAY_SIDE)


def _candidate(explorer: Explorer, flat: int) -> tuple[int, int | None, int]:
    """A flat index of the (num_layers, num_heads + 1) table -> (block, head or None for the sum, column)."""
    layer, column = divmod(flat, explorer.num_heads + 1)
    return layer, None if column == explorer.num_heads else column, column


def explore_fn(explorer: Explorer):
    """The ``/explore`` handler: (image, block, head, score variant, mask ratio, progress, object mask) ->
    (heat map, mask, reconstruction, counts line, numbers)."""

    def explore(image, block, head, variant, mask_ratio, progress, object_mask):
        if image is None:
            return None, None, None, "", None
        try:
            score, queries = _variant(variant)
            view = explorer.explore(
                image,
                layer=int(block),
                head=head,
                score=score,
                queries=queries,
                mask_ratio=float(mask_ratio),
                progress=float(progress),
                object_mask=object_mask,
            )
        except ValueError as error:
            raise gr.Error(str(error)) from None
        numbers = {
            "block": view.layer,
            "head": ALL_HEADS if view.head is None else view.head,
            "score": score,
            "queries": queries,
            "mask_ratio": float(mask_ratio),
            "progress": float(progress),
            "counts": view.counts,
            "object_share": view.object_share,
            "random_object_share": view.random_object_share,
            "gpa": [round(float(value), 6) for value in view.gpa],
            "groups": view.groups.tolist(),
        }
        counts = view.counts
        line = f"**{sum(counts.values())} of {explorer.num_patches} patches masked**: hard {counts['hard']}, soft "
        line += f"{counts['soft']}, random {counts['random']} (block {view.layer}, {_head_name(view.head)})"
        if view.object_share is not None:
            line += f"; object hidden {view.object_share:.0%} (a random mask: {view.random_object_share:.0%})"
        return _shown(view.heat_map), _shown(view.mask), _shown(view.reconstruction), line, numbers

    return explore


def rank_fn(explorer: Explorer):
    """The ``/rank`` handler: (image, object mask, score variant, mask ratio, progress) -> (table image, top list)."""

    def rank(image, object_mask, variant, mask_ratio, progress):
        if image is None or object_mask is None:
            raise gr.Error("upload an image and its object mask (object = white) to rank the blocks and heads.")
        try:
            score, queries = _variant(variant)
            shares = explorer.rank_heads(
                image, object_mask, score=score, queries=queries, mask_ratio=float(mask_ratio), progress=float(progress)
            )
        except ValueError as error:
            raise gr.Error(str(error)) from None
        flat_shares = shares.flatten()
        candidates = [_candidate(explorer, int(flat)) for flat in flat_shares.argsort(descending=True, stable=True)][
            :TOP_CANDIDATES
        ]
        top = [
            {"candidate": candidate_name(layer, head), "object_share": round(float(shares[layer, column]), 4)}
            for layer, head, column in candidates
        ]
        best_layer, best_head, _ = candidates[0]
        title = f"share of the object each block x head's mask hides (progress {float(progress):.2f})"
        figure = recall_heatmap_figure(shares, best_layer, best_head, title)
        return figure_to_array(figure), top

    return rank


def build_app(explorer: Explorer, examples: list[tuple[str, Image.Image]]) -> gr.Blocks:
    """The page for ``explorer``; ``examples``: (name, image) pairs offered in a drop-down, the first shown first."""
    named = dict(examples)
    first = examples[0][0] if examples else None
    checkpoint_label = (
        f"checkpoint's choice (block {explorer.checkpoint_layer}, {_head_name(explorer.checkpoint_head)})"
    )
    heads = [(checkpoint_label, CHECKPOINT_CHOICE), ("sum of heads", ALL_HEADS)]
    heads += [(f"head {head}", str(head)) for head in range(explorer.num_heads)]
    variants = [
        (_variant_label(score, queries), _variant_key(score, queries)) for score, queries in explorer.score_variants()
    ]
    with gr.Blocks(title=f"GPA explorer: {explorer.name}") as app:
        gr.Markdown(
            f"## GPA explorer: `{explorer.name}`\nWhich patches would this teacher hide? The GPA heat map of one block "
            "and head, the soft-to-hard mask (Eq. 6) at a training progress, and the MAE reconstruction under it."
        )
        with gr.Row():
            with gr.Column():
                example = gr.Dropdown(list(named), value=first, label="example image")
                image = gr.Image(named.get(first), type="pil", format="png", label="image", elem_id="image", height=260)
                object_mask = gr.Image(
                    type="pil",
                    format="png",
                    label="object mask (optional; object = white)",
                    elem_id="object-mask",
                    height=160,
                )
            with gr.Column():
                block = gr.Dropdown(
                    [str(layer) for layer in range(explorer.num_layers)],
                    value=str(explorer.checkpoint_layer),
                    label="block (a head other than the checkpoint's choice)",
                )
                head = gr.Dropdown(heads, value=CHECKPOINT_CHOICE, label="head")
                variant = gr.Dropdown(variants, value=variants[0][1], label="score")
                mask_ratio = gr.Slider(
                    0.05, 0.95, explorer.mask_ratio, step=0.05, label="mask ratio", elem_id="mask-ratio"
                )
                progress = gr.Slider(0.0, 1.0, START_PROGRESS, step=0.05, label="training progress", elem_id="progress")
        with gr.Row():
            heat_map = gr.Image(format="png", label="GPA heat map", elem_id="heat-map", interactive=False)
            mask = gr.Image(
                format="png", label="mask: hard red, soft orange, random blue", elem_id="mask", interactive=False
            )
            reconstruction = gr.Image(
                format="png",
                label="MAE reconstruction (visible patches pasted)",
                elem_id="reconstruction",
                interactive=False,
                visible=explorer.has_decoder,
            )
        counts = gr.Markdown(elem_id="counts")
        with gr.Row():
            rank_button = gr.Button("rank every block x head by the object share hidden", elem_id="rank")
        ranking = gr.Image(format="png", label="blocks x heads", elem_id="ranking", interactive=False)
        top = gr.JSON(label="best candidates", elem_id="top")
        with gr.Accordion("numbers: scores, counts, shares", open=False):
            numbers = gr.JSON(label="numbers", elem_id="numbers")

        example.change(named.get, example, image, api_name=False)
        controls = [image, block, head, variant, mask_ratio, progress, object_mask]
        gr.on(
            [app.load, *(control.change for control in controls)],
            explore_fn(explorer),
            controls,
            [heat_map, mask, reconstruction, counts, numbers],
            api_name="explore",
            trigger_mode="always_last",
        )
        rank_button.click(
            rank_fn(explorer), [image, object_mask, variant, mask_ratio, progress], [ranking, top], api_name="rank"
        )
    return app


def launch(model_name_or_path: str, server_name: str | None = None, server_port: int | None = None, **launch_options):
    """Loads the checkpoint, builds the page with the bundled examples and serves it (never a share link).

    ``server_name`` None: Gradio's default (``GRADIO_SERVER_NAME``, else 127.0.0.1), as a Space sets it.
    """
    explorer = Explorer.from_pretrained(model_name_or_path)
    examples = example_images(SKIMAGE_PHOTOS, NUM_FASHION_MNIST)
    if explorer.settings.num_channels == 1:
        # A grey model was most likely trained on Fashion-MNIST: show a garment first.
        examples = examples[len(SKIMAGE_PHOTOS) :] + examples[: len(SKIMAGE_PHOTOS)]
    app = build_app(explorer, examples)
    return app.launch(server_name=server_name, server_port=server_port, share=False, css=CSS, **launch_options)


__all__ = ["build_app", "explore_fn", "launch", "rank_fn"]
