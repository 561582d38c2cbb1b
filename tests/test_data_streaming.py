"""Streamed splits: sources, the node split, the shuffle buffer, the position a StatefulDataLoader saves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torchdata.stateful_dataloader import StatefulDataLoader

from modeling_gpa.data.device_decoding import DeviceDecodingImageDataset, decode_on_device
from modeling_gpa.data.encoded_images import ENCODED_KEY
from modeling_gpa.data.pipeline import EvalCrop, ImageDataset, TrainCrop, collate_pixel_values
from modeling_gpa.data.shards import prepare_shards
from modeling_gpa.data.streaming import (
    DEFAULT_SHUFFLE_BUFFER_SIZE,
    NodeSplit,
    StreamingImageDataset,
    load_image_streams,
    split_stream,
)


def solid_image_folder(root, count: int, classes: int = 2):
    """``count`` 8x8 PNGs of one gray level each, the image's id (0-255), in ``classes`` class subfolders."""
    for index in range(count):
        folder = root / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), index, dtype=np.uint8), "L").convert("RGB").save(folder / f"{index:03d}.png")
    return root


def ids_of(batch) -> list[int]:
    """The ids of a batch of solid images: every pixel of an image holds its id."""
    return batch["pixel_values"][:, 0, 0, 0].tolist()


@pytest.fixture
def parquet_shards(tmp_path):
    prepare_shards(str(solid_image_folder(tmp_path / "images", 48)), str(tmp_path / "shards"), num_shards=4)
    return tmp_path / "shards"


def streamed(shards, buffer: int = 0, rank: int = 0, world_size: int = 1) -> StreamingImageDataset:
    streams = load_image_streams(dataset_name=str(shards))
    train, _ = split_stream(streams.train, rank, world_size)
    return StreamingImageDataset(ImageDataset(train, EvalCrop(8, 3), streams.image_column), buffer, seed=0, rank=rank)


def test_parquet_shards_stream_every_image_once_with_their_count_from_the_footers(parquet_shards):
    streams = load_image_streams(dataset_name=str(parquet_shards))
    assert (streams.image_column, streams.train_examples, streams.train.num_shards) == ("image", 48, 4)
    ids = [example["pixel_values"][0, 0, 0].item() for example in streamed(parquet_shards)]
    assert sorted(ids) == list(range(48))


def test_webdataset_shards_and_a_train_dir_of_shards_stream_too(tmp_path):
    folder = solid_image_folder(tmp_path / "images", 12)
    prepare_shards(str(folder), str(tmp_path / "wds"), shard_format="webdataset", num_shards=3)
    streams = load_image_streams(train_dir=str(tmp_path / "wds"))
    assert streams.image_column == "png" and streams.train.num_shards == 3 and streams.train_examples is None
    rows = ImageDataset(streams.train, EvalCrop(8, 3), streams.image_column)
    assert sorted(example["pixel_values"][0, 0, 0].item() for example in StreamingImageDataset(rows)) == list(range(12))


def test_processes_read_disjoint_whole_shards(parquet_shards):
    per_rank = [{e["pixel_values"][0, 0, 0].item() for e in streamed(parquet_shards, 0, r, 2)} for r in (0, 1)]
    assert not per_rank[0] & per_rank[1] and len(per_rank[0] | per_rank[1]) == 48
    assert NodeSplit(4, 2).whole_shards and not NodeSplit(4, 3).whole_shards
    assert NodeSplit(4, 3).strategy == "shards" and "1 processes read 2 whole shards" in NodeSplit(4, 3).describe()
    assert NodeSplit(2, 3).strategy == "examples" and "3x the reading" in NodeSplit(2, 3).describe()
    three = [{e["pixel_values"][0, 0, 0].item() for e in streamed(parquet_shards, 0, r, 3)} for r in range(3)]
    assert sorted(len(ids) for ids in three) == [12, 12, 24] and len(set.union(*three)) == 48


def test_the_buffer_shuffles_by_seed_and_epoch_and_keeps_every_image(parquet_shards):
    dataset = streamed(parquet_shards, buffer=8)
    first = [e["pixel_values"][0, 0, 0].item() for e in dataset]
    again = [e["pixel_values"][0, 0, 0].item() for e in dataset]
    dataset.set_epoch(1)
    other = [e["pixel_values"][0, 0, 0].item() for e in dataset]
    assert sorted(first) == sorted(other) == list(range(48))
    assert first == again and first != other and first != sorted(first)


@pytest.mark.parametrize("buffer", [4, DEFAULT_SHUFFLE_BUFFER_SIZE])
def test_a_restored_loader_refills_its_buffers_and_continues_as_the_uninterrupted_one(parquet_shards, buffer):
    """Two workers, resumed after 3 batches from the state as the trainer writes it (JSON): every id exactly once,
    in the uninterrupted order, at a small buffer and at the default one (which holds the whole stream)."""

    def loader(dataset):
        return StatefulDataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_pixel_values)

    uninterrupted = [i for batch in loader(streamed(parquet_shards, buffer)) for i in ids_of(batch)]
    first = loader(streamed(parquet_shards, buffer))
    batches = iter(first)
    before = [i for _ in range(3) for i in ids_of(next(batches))]
    state = json.loads(json.dumps(first.state_dict()))
    del batches
    resumed = loader(streamed(parquet_shards, buffer))
    resumed.load_state_dict(state)
    after = [i for batch in resumed for i in ids_of(batch)]
    assert before + after == uninterrupted and sorted(uninterrupted) == list(range(48))


def test_the_saved_buffer_is_one_position_per_row_and_a_stream_state(parquet_shards):
    dataset = streamed(parquet_shards, buffer=8)
    rows = iter(dataset)
    [next(rows) for _ in range(10)]
    saved = dataset.state_dict()["buffer"]
    assert len(saved["positions"]) == 8 and max(saved["positions"]) < saved["next_position"] == 18
    assert saved["refill_from"][0] <= min(saved["positions"])


def test_in_memory_datasets_stream_in_shards(fashion_mnist):
    streams = load_image_streams(dataset_name="fashion_mnist")
    assert streams.train_examples == 60_000 and streams.train.num_shards == 64 and streams.validation is not None


def test_an_empty_image_folder_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images in"):
        load_image_streams(train_dir=str(tmp_path / "empty"))


def test_strict_streams_name_an_unreadable_image(tmp_path):
    folder = solid_image_folder(tmp_path / "images", 4)
    (folder / "class_0" / "broken.png").write_bytes(b"not an image")
    streams = load_image_streams(train_dir=str(folder))
    rows = ImageDataset(streams.train, EvalCrop(8, 3), streams.image_column)
    examples = list(StreamingImageDataset(rows))
    names = [name for example in examples for name in example.get("unreadable_images", [])]
    assert len(examples) == 4 and names == [str(folder / "class_0" / "broken.png")]
    rows.strict = True
    with pytest.raises(ValueError, match="broken.png"):
        list(StreamingImageDataset(rows))


def test_negative_buffer_is_refused(parquet_shards):
    with pytest.raises(ValueError, match="shuffle_buffer_size=-1"):
        streamed(parquet_shards, buffer=-1)
    assert torch.utils.data.IterableDataset in type(streamed(parquet_shards)).__mro__


def test_device_decoding_takes_its_jpegs_from_a_stream(tmp_path):
    """--streaming with --image_decoding device: the stream's JPEG bytes reach the device decoder undecoded."""
    from test_data_device_decoding import pil_jpeg_decoder

    folder = tmp_path / "photos" / "cats"
    folder.mkdir(parents=True)
    for index in range(4):
        Image.fromarray(skimage.data.chelsea()[index * 10 :]).save(folder / f"{index}.jpg", quality=90)
    prepare_shards(str(tmp_path / "photos"), str(tmp_path / "shards"), num_shards=2)
    streams = load_image_streams(dataset_name=str(tmp_path / "shards"))
    rows = DeviceDecodingImageDataset(streams.train, TrainCrop(32, 3), streams.image_column)
    batch = collate_pixel_values(list(StreamingImageDataset(rows)))
    encoded = batch[ENCODED_KEY]
    assert encoded.positions == [0, 1, 2, 3] and {jpeg.name for jpeg in encoded.jpegs} == {
        f"cats/{index}.jpg" for index in range(4)
    }
    pixels, failed = decode_on_device(encoded, batch.get("pixel_values"), torch.device("cpu"), pil_jpeg_decoder)
    assert failed == [] and pixels.shape == (4, 3, 32, 32) and pixels.dtype == torch.uint8
