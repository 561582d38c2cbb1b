"""Where images come from and how they reach the model.

``sources`` loads a split (Fashion-MNIST, cluttered Fashion-MNIST, an image folder, the Hub) and builds the image
processor; ``pipeline`` turns images into uint8 batches (decode, crop, collate) and normalises them on the device
(`PixelNormalizer`); ``cluttered`` generates the synthetic cluttered set; ``ground_truth`` reads object masks
(a dataset, a masks folder, boxes) and draws the annotated images few-shot selection takes
(`annotated_model_inputs`); ``image_inputs`` prepares in-memory images for head selection and visualisation;
``fashion_mnist`` and ``arrays`` read the raw data; ``splits`` gives the pretraining scripts their train and validation
splits and crops.

Every public name of these modules is importable from here (``from modeling_gpa.data import load_image_datasets``).
They load on first use: ``sources`` imports `datasets`, which the GPU benchmark machines lack, and the modules that
need only torch and numpy must import there.
"""

from __future__ import annotations

import importlib

# Searched in this order; the modules that need only torch and numpy come first.
_SUBMODULES = (
    "pipeline",
    "fashion_mnist",
    "image_inputs",
    "ground_truth",
    "arrays",
    "sources",
    "streaming",
    "cluttered",
    "splits",
)


def __getattr__(name: str):
    if not name.startswith("_"):
        for submodule in _SUBMODULES:
            module = importlib.import_module(f"{__name__}.{submodule}")
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
