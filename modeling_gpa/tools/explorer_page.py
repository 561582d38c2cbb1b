"""The GPA explorer's Gradio page, which imports neither torch nor this package: every answer comes from a backend.

``run_scripts/gpa_explorer.py`` runs this file as a process of its own (``python -P explorer_page.py``) beside the
process that imports torch and loads the checkpoint (``explorer_app.serve_backend``): gradio's imports and torch's,
seconds each, then run on two cores at once instead of one after the other. The page reaches the backend through
``multiprocessing.connection`` on 127.0.0.1 with a one-time key; in one process (a Space) ``explorer_app.build_app``
hands it the backend's handlers directly. A ``ValueError`` of the backend is shown on the page as a Gradio error.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Client
from typing import Any

import gradio as gr

# Small inputs (a 28x28 garment) fill their panel, pixels kept sharp.
CSS = "#image img, #object-mask img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"
# Half-way through training, Eq. 6's default schedule has hard, soft and random patches all in the mask.
START_PROGRESS = 0.5

Backend = Callable[[str, tuple], Any]


def answer(backend: Backend, endpoint: str, inputs: tuple) -> Any:
    """``backend(endpoint, inputs)``, its ``ValueError`` raised as the page's one-line error."""
    try:
        return backend(endpoint, inputs)
    except ValueError as error:
        raise gr.Error(str(error)) from None


def build_page(spec: dict, backend: Backend) -> gr.Blocks:
    """The page described by ``spec`` (``explorer_app.page_spec``: names, choices and example images), each change
    answered by ``backend("explore" | "rank", inputs)``."""
    named = dict(spec["examples"])
    first = spec["examples"][0][0] if spec["examples"] else None
    with gr.Blocks(title=f"GPA explorer: {spec['name']}") as app:
        gr.Markdown(
            f"## GPA explorer: `{spec['name']}`\nWhich patches would this teacher hide? The GPA heat map of one block "
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
                    spec["blocks"],
                    value=spec["block"],
                    label="block (a head other than the checkpoint's choice)",
                )
                head = gr.Dropdown(spec["heads"], value=spec["head"], label="head")
                variant = gr.Dropdown(spec["variants"], value=spec["variants"][0][1], label="score")
                mask_ratio = gr.Slider(
                    0.05, 0.95, spec["mask_ratio"], step=0.05, label="mask ratio", elem_id="mask-ratio"
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
                visible=spec["has_decoder"],
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
            lambda *inputs: answer(backend, "explore", inputs),
            controls,
            [heat_map, mask, reconstruction, counts, numbers],
            api_name="explore",
            trigger_mode="always_last",
        )
        rank_button.click(
            lambda *inputs: answer(backend, "rank", inputs),
            [image, object_mask, variant, mask_ratio, progress],
            [ranking, top],
            api_name="rank",
        )
    return app


class ConnectedBackend:
    """The backend process on the other end of ``connection``: one request at a time, in order."""

    def __init__(self, connection):
        self.connection = connection
        self.lock = threading.Lock()

    def __call__(self, endpoint: str, inputs: tuple) -> Any:
        with self.lock:
            self.connection.send((endpoint, inputs))
            status, value = self.connection.recv()
        if status == "error":
            raise ValueError(value)
        return value


def exit_with_the_parent() -> None:
    """Ends this process when standard input closes: the backend that started it holds the other end, so a backend
    that exits, or is killed, takes the page down with it."""
    sys.stdin.read()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The explorer's page, started by run_scripts/gpa_explorer.py.")
    parser.add_argument("--backend_port", type=int, required=True)
    parser.add_argument("--server_name", default=None)
    parser.add_argument("--server_port", type=int, default=None)
    args = parser.parse_args(argv)
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    threading.Thread(target=exit_with_the_parent, name="exit with the parent", daemon=True).start()
    connection = Client(("127.0.0.1", args.backend_port), authkey=authkey)
    app = build_page(connection.recv(), ConnectedBackend(connection))
    try:
        app.launch(server_name=args.server_name, server_port=args.server_port, share=False, css=CSS)
    except OSError as error:
        # A port in use: one line, as the backend reports its own errors.
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
