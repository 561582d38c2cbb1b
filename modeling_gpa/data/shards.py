"""Turn an image folder into shards once, so that every later run streams it: parquet in the Hub's layout, or
webdataset tars.

An image folder is listed once here (one ``os.walk``), the files are put in a seeded random order (an ImageNet folder
is sorted by class, and a shard per class would give a streaming run batches of a few classes), then split into
shards written one row group at a time, so memory stays that of one row group whatever the size of the folder.

- parquet: ``OUTPUT/data/{split}-{i:05d}-of-{n:05d}.parquet``, columns ``image`` (``{"bytes", "path"}``, the file's
  own bytes) and ``label`` (a ``ClassLabel`` of the class subfolders), with `datasets`' features in the schema, as
  the Hub's parquet export writes them: `datasets.load_dataset(OUTPUT)` and ``--dataset_name OUTPUT`` read them.
- webdataset: ``OUTPUT/data/{split}-{i:05d}-of-{n:05d}.tar`` with members ``{key}.{jpg|png|...}`` (the file's bytes)
  and ``{key}.cls`` (the class index), as in timm's imagenet-1k-wds; `datasets`' webdataset builder reads them.

Class subfolders give labels, as `datasets`' imagefolder does; images directly in the folder get none.
"""

from __future__ import annotations

import io
import math
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SHARD_FORMATS = ("parquet", "webdataset")
DEFAULT_IMAGES_PER_SHARD = 1000
# Rows per parquet row group: a streaming reader holds one group in memory (about 11 MB of ImageNet JPEGs).
ROWS_PER_GROUP = 100


@dataclass
class ImageFiles:
    """The images of a folder: ``paths`` and, with class subfolders, ``labels`` (indices into ``classes``)."""

    paths: list[str]
    labels: list[int] | None
    classes: list[str]


def list_image_files(folder: str) -> ImageFiles:
    """Every image file under ``folder`` (by suffix), with the label of its class subfolder when it has one."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist")
    paths: list[str] = []
    for root, directories, files in os.walk(folder):
        directories.sort()
        paths += [os.path.join(root, name) for name in sorted(files) if name.lower().endswith(IMAGE_SUFFIXES)]
    if not paths:
        raise ValueError(f"no images in {folder}: put image files (in one subfolder per class) there")
    relative = [os.path.relpath(path, folder) for path in paths]
    if all(os.sep in name for name in relative):
        class_of = [name.split(os.sep, 1)[0] for name in relative]
        classes = sorted(set(class_of))
        index = {name: i for i, name in enumerate(classes)}
        return ImageFiles(paths, [index[name] for name in class_of], classes)
    return ImageFiles(paths, None, [])


def shard_features(files: ImageFiles) -> datasets.Features:
    """`datasets` features of the parquet shards: the image, and the label when the folder has classes."""
    features = {"image": datasets.Image()}
    if files.labels is not None:
        features["label"] = datasets.ClassLabel(names=files.classes)
    return datasets.Features(features)


def shard_names(split: str, num_shards: int, suffix: str) -> list[str]:
    """The Hub's names of ``num_shards`` shard files of ``split``: ``train-00000-of-00004.parquet``..."""
    return [f"{split}-{index:05d}-of-{num_shards:05d}{suffix}" for index in range(num_shards)]


def write_parquet_shard(path: str, files: ImageFiles, rows: Sequence[int], folder: str) -> None:
    """The images ``rows`` of ``files`` as one parquet file, written a row group at a time."""
    features = shard_features(files)
    with pq.ParquetWriter(path, features.arrow_schema) as writer:
        for start in range(0, len(rows), ROWS_PER_GROUP):
            group = rows[start : start + ROWS_PER_GROUP]
            columns = {
                "image": [
                    {"bytes": _read(files.paths[i]), "path": os.path.relpath(files.paths[i], folder)} for i in group
                ]
            }
            if files.labels is not None:
                columns["label"] = [files.labels[i] for i in group]
            writer.write_table(pa.Table.from_pydict(columns, schema=features.arrow_schema))


def write_webdataset_shard(path: str, files: ImageFiles, rows: Sequence[int], keys: Sequence[str]) -> None:
    """The images ``rows`` of ``files`` as one tar of ``{key}.{image suffix}`` (+ ``{key}.cls``) members."""
    with tarfile.open(path, "w") as tar:
        for i, key in zip(rows, keys, strict=True):
            suffix = os.path.splitext(files.paths[i])[1].lower().replace(".jpeg", ".jpg")
            _add_member(tar, f"{key}{suffix}", _read(files.paths[i]))
            if files.labels is not None:
                _add_member(tar, f"{key}.cls", str(files.labels[i]).encode())


def prepare_shards(
    folder: str,
    output_dir: str,
    split: str = "train",
    shard_format: str = "parquet",
    num_shards: int | None = None,
    images_per_shard: int = DEFAULT_IMAGES_PER_SHARD,
    seed: int = 0,
) -> list[str]:
    """Write the images of ``folder`` as ``split``'s shards under ``output_dir/data``; return the shard paths.

    ``num_shards`` (default: enough for ``images_per_shard`` each) should be a multiple of the number of processes
    that will stream them, so that each process reads whole shards.
    """
    if shard_format not in SHARD_FORMATS:
        raise ValueError(f"format {shard_format!r}: choose one of {', '.join(SHARD_FORMATS)}")
    files = list_image_files(folder)
    if shard_format == "webdataset":
        suffixes = {os.path.splitext(path)[1].lower().replace(".jpeg", ".jpg") for path in files.paths}
        if len(suffixes) > 1:
            raise ValueError(
                f"{folder} mixes image formats ({', '.join(sorted(suffixes))}): webdataset shards would get one "
                "column per format; use --format parquet"
            )
    count = len(files.paths)
    num_shards = num_shards or math.ceil(count / images_per_shard)
    if not 1 <= num_shards <= count:
        raise ValueError(f"num_shards={num_shards} must be between 1 and the {count} images")
    order = np.random.default_rng(seed).permutation(count)
    data_dir = os.path.join(output_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    suffix = ".parquet" if shard_format == "parquet" else ".tar"
    paths = []
    for index, (name, rows) in enumerate(
        zip(shard_names(split, num_shards, suffix), np.array_split(order, num_shards), strict=True)
    ):
        path = os.path.join(data_dir, name)
        rows = rows.tolist()
        if shard_format == "parquet":
            write_parquet_shard(path, files, rows, folder)
        else:
            write_webdataset_shard(path, files, rows, [f"{split}_{index:05d}_{row:08d}" for row in range(len(rows))])
        paths.append(path)
    return paths


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


__all__ = ["SHARD_FORMATS", "ImageFiles", "list_image_files", "prepare_shards", "shard_names"]
