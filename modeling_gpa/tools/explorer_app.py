"""The GPA explorer's backend: what its page shows, computed by ``tools.explorer`` (the page: ``explorer_page``).

Two endpoints: ``/explore`` (heat map, Eq. 6 mask, reconstruction and the numbers behind them, on every change of
the image or a control) and ``/rank`` (every block x head by the share of the uploaded object its mask hides).
``serve_backend`` answers a page in another process (``run_scripts/gpa_explorer.py``); ``build_app`` and ``launch``
put page and backend in one process (a Space). Only ``explorer_page`` imports gradio (the ``demo`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.connection import Listener

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
    (heat map, mask, reconstruction, counts line, numbers); an invalid input raises a one-line ``ValueError``."""

    def explore(image, block, head, variant, mask_ratio, progress, object_mask):
        if image is None:
            return None, None, None, "", None
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
    """The ``/rank`` handler: (image, object mask, score variant, mask ratio, progress) -> (table image, top list);
    an invalid input raises a one-line ``ValueError``."""

    def rank(image, object_mask, variant, mask_ratio, progress):
        if image is None or object_mask is None:
            raise ValueError("upload an image and its object mask (object = white) to rank the blocks and heads.")
        score, queries = _variant(variant)
        shares = explorer.rank_heads(
            image, object_mask, score=score, queries=queries, mask_ratio=float(mask_ratio), progress=float(progress)
        )
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


def page_spec(explorer: Explorer, examples: list[tuple[str, Image.Image]]) -> dict:
    """What ``explorer_page.build_page`` needs of the checkpoint: its name, the choices of each control (labels
    included) and ``examples``, (name, image) pairs of which the first is shown first."""
    own = f"block {explorer.checkpoint_layer}, {_head_name(explorer.checkpoint_head)}"
    checkpoint_label = f"checkpoint's choice ({own})"
    heads = [(checkpoint_label, CHECKPOINT_CHOICE), ("sum of heads", ALL_HEADS)]
    heads += [(f"head {head}", str(head)) for head in range(explorer.num_heads)]
    return {
        "name": explorer.name,
        "blocks": [str(layer) for layer in range(explorer.num_layers)],
        "block": str(explorer.checkpoint_layer),
        "heads": heads,
        "head": CHECKPOINT_CHOICE,
        "variants": [
            (_variant_label(score, queries), _variant_key(score, queries))
            for score, queries in explorer.score_variants()
        ],
        "mask_ratio": explorer.mask_ratio,
        "has_decoder": explorer.has_decoder,
        "examples": examples,
    }


def backend_of(explorer: Explorer) -> Callable[[str, tuple], object]:
    """``(endpoint, inputs) -> outputs`` of the page's two endpoints; an invalid input raises one-line ValueError."""
    handlers = {"explore": explore_fn(explorer), "rank": rank_fn(explorer)}

    def backend(endpoint: str, inputs: tuple) -> object:
        return handlers[endpoint](*inputs)

    return backend


def load(model_name_or_path: str) -> tuple[Explorer, list[tuple[str, Image.Image]]]:
    """The checkpoint's explorer and the bundled example images, a garment first for a grey model."""
    explorer = Explorer.from_pretrained(model_name_or_path)
    examples = example_images(SKIMAGE_PHOTOS, NUM_FASHION_MNIST)
    if explorer.settings.num_channels == 1:
        # A grey model was most likely trained on Fashion-MNIST: show a garment first.
        examples = examples[len(SKIMAGE_PHOTOS) :] + examples[: len(SKIMAGE_PHOTOS)]
    return explorer, examples


def serve_backend(listener: Listener, model_name_or_path: str) -> None:
    """Loads the checkpoint, then answers the page that connects to ``listener`` until it disconnects."""
    explorer, examples = load(model_name_or_path)
    backend = backend_of(explorer)
    with listener.accept() as connection:
        connection.send(page_spec(explorer, examples))
        while True:
            try:
                endpoint, inputs = connection.recv()
            except EOFError:
                return
            try:
                connection.send(("ok", backend(endpoint, inputs)))
            except ValueError as error:
                connection.send(("error", str(error)))


def build_app(explorer: Explorer, examples: list[tuple[str, Image.Image]]):
    """The page and its backend in one process: a ``gradio.Blocks``."""
    from .explorer_page import build_page

    return build_page(page_spec(explorer, examples), backend_of(explorer))


def launch(model_name_or_path: str, server_name: str | None = None, server_port: int | None = None, **launch_options):
    """Loads the checkpoint, builds the page in this process and serves it (never a share link).

    ``server_name`` None: Gradio's default (``GRADIO_SERVER_NAME``, else 127.0.0.1), as a Space sets it.
    """
    from .explorer_page import CSS

    app = build_app(*load(model_name_or_path))
    return app.launch(server_name=server_name, server_port=server_port, share=False, css=CSS, **launch_options)


__all__ = ["backend_of", "build_app", "explore_fn", "launch", "load", "page_spec", "rank_fn", "serve_backend"]
