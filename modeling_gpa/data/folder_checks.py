"""Checks of an image folder (``--train_dir`` / ``--validation_dir``) before the `datasets` builder reads it.

The "imagefolder" builder fails on an empty folder with `Instruction "train" corresponds to no data!` and, when the
images do not all sit at the same depth (one class folder holding a subfolder), silently infers no labels at all.
[`check_image_folder`] says either in one line, naming the folder. A symbolic link to a file that is gone (a
dataset moved, a mount missing) is dropped by the builder without a word: it is named and counted in one warning.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

from PIL import Image

logger = logging.getLogger(__name__)

# Dangling links named in the warning; the count covers all of them.
NAMED_LINKS = 5


def image_files_by_depth(directory: str | os.PathLike) -> dict[int, list[Path]]:
    """The image files under ``directory`` (any extension PIL reads), by their depth below it (1: directly in it)."""
    extensions = set(Image.registered_extensions())
    by_depth: dict[int, list[Path]] = defaultdict(list)
    root = Path(directory)
    for folder, _, files in os.walk(root):
        images = [Path(folder) / name for name in files if os.path.splitext(name)[1].lower() in extensions]
        if images:
            by_depth[len(Path(folder).relative_to(root).parts) + 1].extend(images)
    return dict(by_depth)


def check_image_folder(directory: str | os.PathLike, flag: str, labels: bool = False) -> None:
    """Raises a one-line ``ValueError`` when ``directory`` holds no image, or (``labels``) when its images are not all
    at one depth, so that no class label can be inferred; the message names the folder that breaks the layout."""
    by_depth = image_files_by_depth(directory)
    dangling = sorted(path for paths in by_depth.values() for path in paths if not path.exists())
    if dangling:
        named = ", ".join(str(path.relative_to(directory)) for path in dangling[:NAMED_LINKS])
        more = f" and {len(dangling) - NAMED_LINKS} more" if len(dangling) > NAMED_LINKS else ""
        logger.warning(
            f"{flag} {directory}: {len(dangling)} image files are symbolic links to nothing and are skipped: "
            f"{named}{more}"
        )
        existing = {depth: [path for path in paths if path.exists()] for depth, paths in by_depth.items()}
        by_depth = {depth: paths for depth, paths in existing.items() if paths}
    if not by_depth:
        raise ValueError(
            f"{flag} {directory} holds no image files: point it at a folder of images (one subfolder per class)"
        )
    if not labels or len(by_depth) == 1:
        return
    # The depth most images sit at is the layout; the first image elsewhere names the folder that breaks it.
    usual = max(by_depth, key=lambda depth: len(by_depth[depth]))
    odd = sorted(path for depth, paths in by_depth.items() if depth != usual for path in paths)[0]
    where = "nested one folder deeper than" if len(odd.relative_to(directory).parts) > usual else "not as deep as"
    raise ValueError(
        f"{flag} {directory}: {odd.parent} holds images {where} the other class folders' (e.g. {odd.name}), so no "
        "class labels can be inferred: keep every image directly in its class folder"
    )


def check_image_folders(flags, labels: bool = False) -> None:
    """[`check_image_folder`] of ``flags.train_dir`` and ``flags.validation_dir`` where they are set and exist
    (a missing one is reported by the loader) and no ``flags.dataset_name`` takes their place."""
    if getattr(flags, "dataset_name", None) is not None:
        return
    for flag in ("train_dir", "validation_dir"):
        directory = getattr(flags, flag, None)
        if directory is not None and os.path.isdir(directory):
            check_image_folder(directory, f"--{flag}", labels=labels)


__all__ = ["check_image_folder", "check_image_folders", "image_files_by_depth"]
