"""Streamed image datasets: shards read as they are needed, each process and DataLoader worker on its own shards.

``--streaming`` reads a Hub dataset, a folder of parquet shards in the Hub layout, webdataset tar shards or an image
folder through `datasets.load_dataset(..., streaming=True)`: nothing is listed, copied or cached before the first
step, so the start does not grow with the dataset. The train stream is split between processes by
`datasets.distributed.split_dataset_by_node` (whole shards of its own for each process, one more for some when the
shard count does not divide by the number of processes) and, inside each process, between its DataLoader workers by
`datasets` itself.

Shuffling is not a global permutation: every epoch `datasets` reorders the shards (seeded by the epoch), and each
worker draws its examples from a buffer of ``shuffle_buffer_size`` undecoded rows ([`StreamingImageDataset`], seeded
by the seed, epoch, process and worker). Two images closer than about a buffer apart in one shard tend to stay close.

Resuming: [`StreamingImageDataset`] hands torchdata's ``StatefulDataLoader`` `datasets`' position (shard and row of
each worker, epoch) and what its shuffle buffer holds: the place of each buffered row in the worker's stream (one
integer per row, not its bytes), the buffer's random state, and the stream's position saved every
``STREAM_POSITION_EVERY`` rows before the oldest of them. The trainer saves that in every checkpoint; the resume reads
the rows again from there (undecoded, keeping the buffered ones) and refills the buffer, so over an interrupted epoch
every example is seen exactly once, in the order of the uninterrupted run. (`datasets`' own buffered ``shuffle`` is
not used: it loses its buffer on resume, and its state restores wrongly with two or more workers.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet
import torch
from datasets.distributed import split_dataset_by_node

from .pipeline import UNREADABLE_KEY, ImageDataset, UnreadableImageError, image_name
from .sources import (
    CLUTTERED_FASHION_MNIST_NAME,
    FASHION_MNIST_NAMES,
    holds_shards,
    image_column,
    image_folder_data_files,
    load_from_hub_or_folder,
    load_image_datasets,
)

logger = logging.getLogger(__name__)

# The stream's position is kept every this many rows read: a resume reads again at most this many rows more than the
# buffer's oldest row lies back.
STREAM_POSITION_EVERY = 256
# A stream state of no epoch: loaded, the stream starts its epoch from the beginning (`datasets` applies a saved state
# only to the epoch it was saved in).
EPOCH_START: dict = {"epoch": None}

# Rows each DataLoader worker keeps to draw from. ImageNet's JPEGs average about 110 kB, so 5,000 rows hold about
# 0.55 GB per worker; the timm/imagenet-1k-wds shards hold about 1,250 images, so one buffer mixes four shards.
DEFAULT_SHUFFLE_BUFFER_SIZE = 5000


@dataclass
class NodeSplit:
    """How a stream's shards are divided between ``world_size`` processes."""

    num_shards: int
    world_size: int

    @property
    def strategy(self) -> str:
        """`split_dataset_by_node`'s: "shards" (each process reads whole shards of its own) or "examples" (each reads
        every shard and keeps one example in ``world_size``), only with fewer shards than processes."""
        return "shards" if self.num_shards >= self.world_size else "examples"

    @property
    def whole_shards(self) -> bool:
        """Every process reads the same number of whole shards of its own."""
        return self.num_shards % self.world_size == 0

    def describe(self) -> str:
        """One log line on the split."""
        if self.world_size == 1:
            return f"Streaming {self.num_shards} shards in one process."
        per_process = self.num_shards // self.world_size
        if self.whole_shards:
            return (
                f"Streaming {self.num_shards} shards over {self.world_size} processes: {per_process} whole shards each."
            )
        if self.strategy == "shards":
            return (
                f"Streaming {self.num_shards} shards over {self.world_size} processes: {self.num_shards} is not a "
                f"multiple of {self.world_size}, so {self.num_shards % self.world_size} processes read "
                f"{per_process + 1} whole shards and the others {per_process} (those finish their epochs sooner). "
                f"A multiple of {self.world_size} shards (run_scripts/prepare_shards.py --num_shards) balances them."
            )
        return (
            f"Streaming {self.num_shards} shards over {self.world_size} processes: fewer shards than processes, so "
            f"every process reads every shard and keeps one example in {self.world_size} ({self.world_size}x the "
            f"reading). Write at least {self.world_size} shards (run_scripts/prepare_shards.py --num_shards)."
        )


def split_stream(
    stream: datasets.IterableDataset, rank: int, world_size: int
) -> tuple[datasets.IterableDataset, NodeSplit]:
    """The part of ``stream`` that process ``rank`` of ``world_size`` reads, and how the shards were divided."""
    split = NodeSplit(stream.num_shards, world_size)
    if world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size, strategy=split.strategy)
    return stream, split


class StreamingImageDataset(torch.utils.data.IterableDataset):
    """Examples of a streamed split, decoded and cropped where they are read, drawn through a shuffle buffer.

    Args:
        rows: an [`ImageDataset`] (or `DeviceDecodingImageDataset`) over a `datasets.IterableDataset`: it holds the
            stream (``rows.source``, image column undecoded) and turns each row into an example.
        shuffle_buffer_size: rows each worker draws from; 0 or 1 keeps the stream's order (evaluation).
        seed: seeds the buffer's draws, with the epoch, ``rank`` and the worker.
        rank: this process's index, for the buffer's seed.
        num_examples: examples per epoch over all processes, where known (an epoch-based mask schedule needs it).

    An unreadable image is skipped (its successor takes its place) and named in the next example's
    ``"unreadable_images"``, or with ``rows.strict`` raises [`UnreadableImageError`]. ``state_dict`` /
    ``load_state_dict`` and ``set_epoch`` make it a resumable ``StatefulDataLoader`` dataset.
    """

    def __init__(
        self,
        rows: ImageDataset,
        shuffle_buffer_size: int = 0,
        seed: int = 0,
        rank: int = 0,
        num_examples: int | None = None,
    ) -> None:
        if shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size={shuffle_buffer_size} must be 0 (no shuffling) or more")
        self.rows, self.shuffle_buffer_size, self.seed, self.rank = rows, shuffle_buffer_size, seed, rank
        self.num_examples = num_examples
        self.epoch_offset = 0
        # The shuffle buffer as it is read, for state_dict: its rows, random state, the next row's position, whether it
        # is being emptied at the stream's end, and the stream's state every STREAM_POSITION_EVERY rows.
        self._buffer: list[tuple[int, Any]] = []
        self._rng: np.random.Generator | None = None
        self._next_position = 0
        self._draining = False
        self._stream_positions: list[tuple[int, dict]] = []
        self._restore: dict | None = None  # a checkpoint's buffer, until the next iteration refills it

    @property
    def stream(self) -> datasets.IterableDataset:
        return self.rows.source

    @property
    def epoch(self) -> int:
        """The stream's epoch: it decides the shard order and the buffer's seed."""
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        """Starts pass ``epoch`` of this run over the stream (``Trainer`` counts from 0 again when it resumes)."""
        self.stream.set_epoch(self.epoch_offset + epoch)

    def continue_from_epoch(self, epoch: int) -> None:
        """Resuming: this run's pass 0 is the stream's epoch ``epoch``, where the checkpoint was written."""
        self.epoch_offset = epoch
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict:
        """The stream's position in this worker (shards, rows and epoch), as `datasets` records it, and its shuffle
        buffer's: ``positions`` (each buffered row's place in this worker's stream, in buffer order), ``rng`` (the
        buffer's random state), ``next_position``, ``draining`` and ``refill_from`` (a position at or before the
        oldest buffered row, with the stream's state there)."""
        state = {"stream": self.stream.state_dict()}
        if self._rng is not None:
            positions = [position for position, _ in self._buffer]
            oldest = min(positions, default=self._next_position)
            state["buffer"] = {
                "positions": positions,
                "rng": self._rng.bit_generator.state,
                "next_position": self._next_position,
                "draining": self._draining,
                "refill_from": next(saved for saved in reversed(self._stream_positions) if saved[0] <= oldest),
            }
        elif self._restore is not None:
            state["buffer"] = {key: value for key, value in self._restore.items() if key != "stream"}
        return state

    def load_state_dict(self, state: dict) -> None:
        if "stream" not in state:  # a checkpoint of a version that kept no buffer: the stream's position only
            self.stream.load_state_dict(state)
            return
        self.stream.load_state_dict(state["stream"])
        self._restore = {**state["buffer"], "stream": state["stream"]} if "buffer" in state else None

    def _buffer_rng(self) -> np.random.Generator:
        worker = torch.utils.data.get_worker_info()
        return np.random.default_rng([self.seed, self.epoch, self.rank, worker.id if worker is not None else 0])

    def _refilled_buffer(self, restore: dict) -> list[tuple[int, Any]]:
        """The checkpoint's buffered rows, in buffer order, read again (undecoded) from ``restore["refill_from"]``;
        the stream is then back at the checkpoint's position."""
        wanted = set(restore["positions"])
        position, stream_state = restore["refill_from"]
        rows: dict[int, Any] = {}
        if wanted:
            self.stream.load_state_dict(stream_state)
            for row in self.stream:
                if position in wanted:
                    rows[position] = row
                position += 1
                if position >= restore["next_position"]:
                    break
            self.stream.load_state_dict(restore["stream"])
        missing = wanted - rows.keys()
        if missing:
            raise ValueError(
                f"the stream holds {len(missing)} fewer rows than the checkpoint's shuffle buffer (first missing at "
                f"position {min(missing)}): resume on the data the checkpoint was trained on"
            )
        return [(position, rows[position]) for position in restore["positions"]]

    def _shuffled_rows(self) -> Iterator[tuple[int, Any]]:
        """(position in this worker's stream, row), in the buffer's order."""
        if self.shuffle_buffer_size <= 1:
            yield from enumerate(self.stream)
            return
        restore, self._restore = self._restore, None
        if restore is not None:
            self._rng = np.random.default_rng()
            self._rng.bit_generator.state = restore["rng"]
            self._buffer, self._next_position = self._refilled_buffer(restore), restore["next_position"]
            self._stream_positions = [tuple(restore["refill_from"])]
            self._draining = restore["draining"]
        else:
            self._rng, self._buffer, self._next_position = self._buffer_rng(), [], 0
            self._stream_positions = [(0, EPOCH_START)]
            self._draining = False
        rng, buffer = self._rng, self._buffer
        if not self._draining:
            for row in self.stream:
                item = (self._next_position, row)
                self._next_position += 1
                if self._next_position % STREAM_POSITION_EVERY == 0:
                    self._stream_positions.append((self._next_position, self.stream.state_dict()))
                if len(buffer) < self.shuffle_buffer_size:
                    buffer.append(item)
                    continue
                slot = int(rng.integers(len(buffer)))
                # Swapped before the yield: a state saved while the chosen row is out holds the buffer without it.
                chosen, buffer[slot] = buffer[slot], item
                yield chosen
            # The stream is spent: the buffer empties in a random order, from its end (what is left stays in order).
            buffer[:] = [buffer[slot] for slot in rng.permutation(len(buffer)).tolist()]
            self._draining = True
        while buffer:
            yield buffer.pop()
        self._rng = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        unreadable: list[str] = []
        for position, row in self._shuffled_rows():
            try:
                example = self.rows.example_of_row(row, position)
            except UnreadableImageError as error:
                if self.rows.strict:
                    raise UnreadableImageError(f"{error}: remove it, or drop --strict_images to skip it") from None
                logger.warning(f"Skipping {error}; the next image takes its place.")
                value = row if self.rows.image_column is None else row[self.rows.image_column]
                unreadable.append(image_name(value, position))
                continue
            if unreadable:
                example[UNREADABLE_KEY], unreadable = unreadable, []
            yield example


# Shards of an in-memory dataset (Fashion-MNIST) turned into a stream: enough for several processes and workers.
IN_MEMORY_SHARDS = 64


@dataclass
class ImageStreams:
    """The streamed splits of a source: ``train`` and ``validation`` (None when the source has none), the image
    column, and the number of training examples where the source records it (else None)."""

    train: datasets.IterableDataset
    validation: datasets.IterableDataset | None
    image_column: str
    train_examples: int | None


def load_image_streams(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    image_column_name: str | None = None,
) -> ImageStreams:
    """The splits of a Hub dataset, a folder of parquet / webdataset shards, an image folder or Fashion-MNIST as
    streams, with nothing read before the first example is asked for.

    "validation" falls back to "test"; a stream has no cheap held-out split, so without either it is None. The number
    of training examples comes from the split's metadata, else from the parquet files' footers (local shards); None
    when neither records it (webdataset tars, image folders).
    """
    if dataset_name in FASHION_MNIST_NAMES or dataset_name == CLUTTERED_FASHION_MNIST_NAME:
        splits, column = load_image_datasets(dataset_name, dataset_config_name, cache_dir=cache_dir)
        streams = datasets.IterableDatasetDict(
            {
                name: split.to_iterable_dataset(num_shards=min(IN_MEMORY_SHARDS, len(split)))
                for name, split in splits.items()
            }
        )
        counts = {name: len(split) for name, split in splits.items()}
    elif dataset_name is not None or (train_dir is not None and holds_shards(train_dir)):
        source = dataset_name or train_dir
        streams = load_from_hub_or_folder(source, dataset_config_name, cache_dir, token, streaming=True)
        counts = {
            name: _recorded_examples(stream, source, dataset_config_name, name, token)
            for name, stream in streams.items()
        }
    elif train_dir is not None:
        streams = _stream_image_folder(train_dir, validation_dir)
        counts = {}
        logger.warning(
            f"Streaming the image folder {train_dir}: `datasets` reads it as one shard, so one DataLoader worker per "
            "process decodes it and every process reads every file name. Write it as shards once "
            "(run_scripts/prepare_shards.py) to stream in parallel."
        )
    else:
        raise ValueError("no dataset given: pass --dataset_name (a Hub dataset or a folder of shards) or --train_dir")
    if "train" not in streams:
        raise ValueError(f"dataset {dataset_name or train_dir} has no 'train' split (splits: {sorted(streams)})")
    validation = streams.get("validation", streams.get("test"))
    column = image_column(streams["train"], image_column_name)
    return ImageStreams(streams["train"], validation, column, counts.get("train"))


def _stream_image_folder(train_dir: str, validation_dir: str | None) -> datasets.IterableDatasetDict:
    data_files = image_folder_data_files(train_dir, validation_dir)
    # A stream lists nothing before it is read: look for one file (the first one found ends the walk).
    if not any(files for _, _, files in os.walk(train_dir)):
        raise ValueError(f"no images in {train_dir}: put image files (in one subfolder per class) there")
    return datasets.load_dataset("imagefolder", data_files=data_files, streaming=True)


def _recorded_examples(
    stream: datasets.IterableDataset, source: str, config_name: str | None, split: str, token: str | bool | None
) -> int | None:
    """The examples of a split as its metadata records them, else as its local parquet files' footers do."""
    recorded = stream.info.splits.get(split) if stream.info.splits else None
    if recorded is not None and recorded.num_examples:
        return recorded.num_examples
    if not os.path.isdir(source):
        return None
    files = datasets.load_dataset_builder(source, config_name, token=token).config.data_files.get(split, [])
    if not files or not all(str(path).endswith(".parquet") and os.path.isfile(path) for path in files):
        return None
    return sum(pyarrow.parquet.read_metadata(path).num_rows for path in files)


__all__ = [
    "DEFAULT_SHUFFLE_BUFFER_SIZE",
    "STREAM_POSITION_EVERY",
    "ImageStreams",
    "NodeSplit",
    "StreamingImageDataset",
    "load_image_streams",
    "split_stream",
]
