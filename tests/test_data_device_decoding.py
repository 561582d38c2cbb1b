"""Device decoding (``--image_decoding device``): workers hand over JPEG bytes and crops, the device decodes.

torchvision's nvJPEG cannot run on this CPU-only torch, so the device side is driven by a PIL JPEG decoder with the
same interface (bytes tensors in, (C, H, W) uint8 tensors out); everything else is the code a GPU run executes.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from tiny import tiny_kwargs
from torch.utils.data import DataLoader
from transformers import TrainingArguments

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.data.device_decoding import (
    DeviceDecodingImageDataset,
    DeviceDecodingUnavailable,
    decode_on_device,
    nvjpeg_decoder,
)
from modeling_gpa.data.encoded_images import ENCODED_KEY, EncodedImages
from modeling_gpa.data.pipeline import (
    ImageDataset,
    TrainCrop,
    UnreadableImageError,
    collate_pixel_values,
    exif_transpose_tensor,
    random_resized_crop_box,
)
from modeling_gpa.training.trainer import GPATrainer

MODES = {1: "L", 3: "RGB"}


def pil_jpeg_decoder(datas: list[torch.Tensor], num_channels: int, device: torch.device) -> list[torch.Tensor]:
    """torchvision.io.decode_jpeg's contract with PIL: raises on a damaged file, (C, H, W) uint8 on ``device``."""
    images = []
    for data in datas:
        image = Image.open(io.BytesIO(data.numpy().tobytes()))
        image.load()
        pixels = torch.from_numpy(np.array(image.convert(MODES[num_channels])))
        pixels = pixels.unsqueeze(-1) if pixels.ndim == 2 else pixels
        images.append(pixels.permute(2, 0, 1).to(device))
    return images


def device_batch(dataset, indices: list[int], seed: int) -> dict:
    torch.manual_seed(seed)
    return collate_pixel_values([dataset[i] for i in indices])


def test_jpegs_leave_the_worker_undecoded_with_the_crop_the_cpu_pipeline_draws(photos):
    files = [str(photos[name]) for name in ("coffee", "png", "gray", "chelsea", "cmyk")]
    crop = TrainCrop(64, 3)
    batch = device_batch(DeviceDecodingImageDataset(files, crop), range(5), seed=3)
    encoded = batch[ENCODED_KEY]
    # Only the RGB JPEGs travel undecoded; the PNG, grayscale and CMYK images are cropped in the worker.
    assert isinstance(encoded, EncodedImages) and encoded.positions == [0, 3]
    assert encoded.shape == (5, 3, 64, 64)
    assert torch.equal(
        encoded.jpegs[0].data, torch.frombuffer(bytearray(photos["coffee"].read_bytes()), dtype=torch.uint8)
    )
    assert encoded.jpegs[1].name == str(photos["chelsea"])
    cpu = device_batch(ImageDataset(files, crop), range(5), seed=3)["pixel_values"]
    assert batch["pixel_values"].shape == (5, 3, 64, 64)
    assert torch.equal(batch["pixel_values"][[1, 2, 4]], cpu[[1, 2, 4]])
    assert not batch["pixel_values"][[0, 3]].any()

    pixels, failed = decode_on_device(encoded, batch["pixel_values"], torch.device("cpu"), pil_jpeg_decoder)
    assert failed == [] and pixels.dtype == torch.uint8 and torch.equal(pixels[[1, 2, 4]], cpu[[1, 2, 4]])
    # Same boxes and flips as PIL's crop; only the resampler differs (torch's antialiased bicubic vs PIL's).
    difference = (pixels[[0, 3]].float() - cpu[[0, 3]].float()).abs()
    assert difference.mean() < 0.5 and (difference > 2).float().mean() < 0.02


def test_device_path_draws_the_cpu_crops_boxes_and_flips_from_the_same_rng(photos):
    """The box and flip sequence is TrainCrop's (whose distributions test_data_pipeline checks against MAE's)."""
    dataset = DeviceDecodingImageDataset([str(photos["coffee"])] * 200, TrainCrop(32, 3))
    jpegs = device_batch(dataset, range(200), seed=0)[ENCODED_KEY].jpegs
    torch.manual_seed(0)
    expected = []
    for _ in range(200):
        box = random_resized_crop_box(600, 400, (0.2, 1.0), (3 / 4, 4 / 3))
        expected.append((box, torch.rand(1).item() < 0.5))
    assert [(jpeg.box, jpeg.flip) for jpeg in jpegs] == expected
    assert 60 < sum(flip for _, flip in expected) < 140


def test_an_undecodable_jpeg_is_replaced_and_counted_or_stops_a_strict_run(photos):
    files = [str(photos[name]) for name in ("coffee", "truncated", "chelsea")]
    crop = TrainCrop(32, 3)
    batch = device_batch(DeviceDecodingImageDataset(files, crop), range(3), seed=0)
    assert batch[ENCODED_KEY].positions == [0, 1, 2]
    pixels, failed = decode_on_device(batch[ENCODED_KEY], None, torch.device("cpu"), pil_jpeg_decoder)
    assert failed == [files[1]] and pixels.shape == (3, 3, 32, 32)
    # The next decodable image (chelsea, with its own crop) takes the damaged one's place.
    assert torch.equal(pixels[1], pixels[2])
    strict = device_batch(DeviceDecodingImageDataset(files, crop, strict=True), range(3), seed=0)
    with pytest.raises(UnreadableImageError, match="truncated.jpg.*--strict_images") as error:
        decode_on_device(strict[ENCODED_KEY], None, torch.device("cpu"), pil_jpeg_decoder)
    assert "\n" not in str(error.value)
    with pytest.raises(UnreadableImageError, match="no JPEG of a batch of 1"):
        decode_on_device(
            device_batch(DeviceDecodingImageDataset(files, crop), [1], 0)[ENCODED_KEY],
            None,
            torch.device("cpu"),
            pil_jpeg_decoder,
        )


def test_a_jpeg_the_device_decoder_refuses_is_decoded_on_the_host(photos, tmp_path):
    Image.open(photos["chelsea"]).save(tmp_path / "progressive.jpg", quality=90, progressive=True)
    files = [str(photos["coffee"]), str(tmp_path / "progressive.jpg")]

    def baseline_only(datas, num_channels, device):
        # nvJPEG's hardware path, for one, takes baseline JPEGs only: start-of-frame marker 0xFFC2 is progressive.
        if any(b"\xff\xc2" in data.numpy().tobytes() for data in datas):
            raise RuntimeError("unsupported JPEG")
        return pil_jpeg_decoder(datas, num_channels, device)

    crop = TrainCrop(32, 3)
    batch = device_batch(DeviceDecodingImageDataset(files, crop), range(2), seed=0)
    pixels, failed = decode_on_device(batch[ENCODED_KEY], None, torch.device("cpu"), baseline_only)
    expected, _ = decode_on_device(batch[ENCODED_KEY], None, torch.device("cpu"), pil_jpeg_decoder)
    assert failed == [] and torch.equal(pixels, expected)


def test_files_that_are_not_images_are_skipped_in_the_worker(photos, tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    files = [str(tmp_path / "junk.jpg"), str(tmp_path / "missing.jpg"), str(photos["coffee"])]
    example = DeviceDecodingImageDataset(files, TrainCrop(32, 3))[0]
    assert example["unreadable_images"] == files[:2] and ENCODED_KEY in example
    with pytest.raises(UnreadableImageError, match="junk.jpg"):
        DeviceDecodingImageDataset(files, TrainCrop(32, 3), strict=True)[0]
    with pytest.raises(ValueError, match="TrainCrop"):
        DeviceDecodingImageDataset(files, lambda image: image)


def test_without_torchvision_or_cuda_the_error_says_what_to_do():
    with pytest.raises(DeviceDecodingUnavailable, match="--image_decoding cpu") as error:
        nvjpeg_decoder(torch.device("cpu"))
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)


def test_trainer_decodes_worker_batches_on_the_device_and_trains_like_the_cpu_pipeline(photos, tmp_path):
    files = [str(photos[name]) for name in ("coffee", "chelsea", "png", "coffee", "chelsea", "coffee")] * 2
    crop = TrainCrop(32, 3)

    def train(dataset) -> tuple[GPATrainer, list[float]]:
        torch.manual_seed(0)
        model = GPAForPreTraining(GPAConfig(**tiny_kwargs(image_size=32, patch_size=8, num_channels=3)))
        args = TrainingArguments(
            output_dir=str(tmp_path / "out"),
            per_device_train_batch_size=6,
            max_steps=4,
            learning_rate=1e-3,
            logging_steps=1,
            dataloader_num_workers=2,
            remove_unused_columns=False,
            report_to=[],
            save_strategy="no",
            seed=0,
            use_cpu=True,
        )
        trainer = GPATrainer(model=model, args=args, train_dataset=dataset, data_collator=collate_pixel_values)
        trainer.jpeg_decoder = pil_jpeg_decoder
        trainer.train()
        return trainer, [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    device_trainer, device_losses = train(DeviceDecodingImageDataset(files, crop))
    _, cpu_losses = train(ImageDataset(files, crop))
    assert len(device_losses) == 4 and all(np.isfinite(device_losses))
    # Same images, crops, flips and masks; the losses differ only by the resampler's rounding.
    np.testing.assert_allclose(device_losses, cpu_losses, rtol=2e-2)
    assert device_trainer.state.total_flos > 0
    batch = collate_pixel_values([DeviceDecodingImageDataset(files, crop)[0]] * 6)
    cpu_batch = collate_pixel_values([ImageDataset(files, crop)[0]] * 6)
    assert device_trainer.floating_point_ops(batch) == device_trainer.floating_point_ops(cpu_batch)


def test_workers_pass_encoded_batches_through_a_dataloader(photos):
    files = [str(photos[name]) for name in ("coffee", "chelsea", "png", "truncated")]
    loader = DataLoader(
        DeviceDecodingImageDataset(files, TrainCrop(32, 3)),
        batch_size=4,
        num_workers=1,
        collate_fn=collate_pixel_values,
        pin_memory=False,
    )
    (batch,) = list(loader)
    encoded = batch[ENCODED_KEY]
    assert encoded.positions == [0, 1, 3] and [jpeg.data.dtype for jpeg in encoded.jpegs] == [torch.uint8] * 3
    pixels, failed = decode_on_device(encoded, batch["pixel_values"], torch.device("cpu"), pil_jpeg_decoder)
    assert failed == [files[3]] and pixels.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("orientation", [3, 6, 7, 8])
def test_the_device_path_turns_rotated_jpegs_upright_like_the_cpu_path(photos, tmp_path, orientation, save_rotated):
    """Coffee (600x400) stored as a camera stores it: the worker draws the crop on the upright size, the device
    transposes the decoded pixels before cropping, and both paths give the same crops."""
    path = tmp_path / f"rotated{orientation}.jpg"
    save_rotated(Image.open(photos["coffee"]), orientation, path)
    files, crop = [str(path)] * 6, TrainCrop(48, 3)
    batch = device_batch(DeviceDecodingImageDataset(files, crop), range(6), seed=5)
    assert [jpeg.orientation for jpeg in batch[ENCODED_KEY].jpegs] == [orientation] * 6
    pixels, failed = decode_on_device(batch[ENCODED_KEY], None, torch.device("cpu"), pil_jpeg_decoder)
    cpu = device_batch(ImageDataset(files, crop), range(6), seed=5)["pixel_values"]
    assert failed == []
    difference = (pixels.float() - cpu.float()).abs()
    assert difference.mean() < 0.5 and (difference > 2).float().mean() < 0.02


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_transpose_of_a_tensor_is_pils(orientation):
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8), "RGB")
    exif = stored.getexif()
    exif[0x0112] = orientation
    stored.info["exif"] = exif.tobytes()
    expected = torch.from_numpy(np.array(ImageOps.exif_transpose(stored))).permute(2, 0, 1)
    tensor = torch.from_numpy(np.array(stored)).permute(2, 0, 1)
    assert torch.equal(exif_transpose_tensor(tensor, orientation), expected)
