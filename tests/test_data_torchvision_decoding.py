"""torchvision decoding in the workers (``--image_decoding cpu``): the PIL pipeline's crops, faster, same errors."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from modeling_gpa.data.pipeline import (
    ImageDataset,
    JpegHeader,
    TrainCrop,
    UnreadableImageError,
    collate_pixel_values,
    jpeg_header,
)
from modeling_gpa.data.torchvision_decoding import TorchvisionImageDataset, torchvision_decoding_available

pytestmark = pytest.mark.skipif(not torchvision_decoding_available(), reason="torchvision does not import")


def crops(dataset, count: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return collate_pixel_values([dataset[i] for i in range(count)])["pixel_values"]


@pytest.mark.parametrize("num_channels, names", [(3, ["coffee", "chelsea", "coffee"]), (1, ["gray", "gray"])])
def test_jpeg_crops_are_the_pil_pipelines_crops(photos, num_channels, names):
    """Same seed, same boxes and flips: the pixels differ only by the resize's rounding."""
    files, crop = [str(photos[name]) for name in names], TrainCrop(64, num_channels, scale=(0.08, 1.0))
    for seed in range(3):
        torchvision, pil = (
            crops(TorchvisionImageDataset(files, crop), len(files), seed),
            crops(ImageDataset(files, crop), len(files), seed),
        )
        assert torchvision.shape == pil.shape == (len(files), num_channels, 64, 64)
        assert torchvision.dtype == torch.uint8
        difference = (torchvision.float() - pil.float()).abs()
        assert difference.mean() < 0.3 and (difference > 3).float().mean() < 0.01


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_rotated_jpegs_come_out_upright_as_pil_turns_them(photos, tmp_path, orientation, save_rotated):
    path = tmp_path / f"rotated{orientation}.jpg"
    save_rotated(Image.open(photos["coffee"]), orientation, path)
    assert jpeg_header(path.read_bytes(), 3) == JpegHeader(600, 400, orientation)
    files, crop = [str(path)] * 4, TrainCrop(48, 3)
    difference = crops(TorchvisionImageDataset(files, crop), 4, 1).float() - crops(ImageDataset(files, crop), 4, 1)
    assert difference.abs().mean() < 0.5


@pytest.mark.parametrize("name", ["png", "png16", "pgm", "cmyk"])
def test_other_formats_and_modes_are_decoded_by_pil_exactly(photos, name):
    files, crop = [str(photos[name])] * 3, TrainCrop(40, 1 if name in ("png16", "pgm") else 3)
    assert jpeg_header(photos[name].read_bytes(), crop.num_channels) is None
    assert torch.equal(crops(TorchvisionImageDataset(files, crop), 3, 0), crops(ImageDataset(files, crop), 3, 0))


def test_jpeg_header_refuses_a_jpeg_above_the_decompression_bomb_limit(photos, monkeypatch):
    data = photos["coffee"].read_bytes()
    assert jpeg_header(data, 3) == JpegHeader(600, 400, 1)
    assert jpeg_header(data, 1) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600 * 400 - 1)
    assert jpeg_header(data, 3) is None


def test_a_truncated_jpeg_is_named_and_replaced_as_the_pil_pipeline_does(photos, caplog):
    files = [str(photos[name]) for name in ("truncated", "chelsea")]
    row = TorchvisionImageDataset(files, TrainCrop(32, 3))[0]
    assert row["unreadable_images"] == [files[0]] and row["pixel_values"].shape == (3, 32, 32)
    assert "truncated.jpg" in caplog.text and "the next image takes its place" in caplog.text
    with pytest.raises(UnreadableImageError, match=r"truncated\.jpg .*drop --strict_images"):
        TorchvisionImageDataset(files, TrainCrop(32, 3), strict=True)[0]


def test_rows_of_a_datasets_table_keep_their_labels(photos):
    import datasets

    jpeg = photos["chelsea"].read_bytes()
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": jpeg, "path": None}] * 2, "label": [4, 7]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    rows = TorchvisionImageDataset(table, TrainCrop(32, 3), image_column="image", label_column="label")
    assert [rows[i]["labels"] for i in range(2)] == [4, 7] and rows[1]["pixel_values"].shape == (3, 32, 32)
    in_memory = TorchvisionImageDataset([Image.open(io.BytesIO(jpeg))], TrainCrop(32, 3))
    assert in_memory[0]["pixel_values"].shape == (3, 32, 32)


def test_workers_decode_with_torchvision_through_a_dataloader(photos):
    files = [str(photos[name]) for name in ("coffee", "chelsea", "png", "truncated")]
    loader = DataLoader(
        TorchvisionImageDataset(files, TrainCrop(32, 3)), batch_size=4, num_workers=2, collate_fn=collate_pixel_values
    )
    (batch,) = list(loader)
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["unreadable_images"] == [files[3]]


def test_only_the_pretraining_crop_is_taken():
    from modeling_gpa.data.pipeline import EvalCrop

    with pytest.raises(ValueError, match="TrainCrop"):
        TorchvisionImageDataset(["a.jpg"], EvalCrop(32, 3))
