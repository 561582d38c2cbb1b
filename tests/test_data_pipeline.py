import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from modeling_gpa.data.pipeline import (
    EvalCrop,
    ImageDataset,
    PixelNormalizer,
    TrainCrop,
    UnreadableImageError,
    collate_pixel_values,
    decode_image,
    one_draw_crop_box,
    random_resized_crop_box,
    to_num_channels,
)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "CMYK", "1", "I;16", "F"])
@pytest.mark.parametrize("num_channels", [1, 3])
def test_to_num_channels_any_mode(mode, num_channels):
    gray = np.linspace(0, 255, 48, dtype=np.float64).reshape(6, 8)
    if mode == "I;16":
        image = Image.fromarray((gray * 257).astype(np.uint16))
    elif mode == "F":
        image = Image.fromarray((gray / 255).astype(np.float32))
    else:
        image = Image.fromarray(gray.astype(np.uint8), "L").convert(mode)
    converted = to_num_channels(image, num_channels)
    assert converted.mode == ("L" if num_channels == 1 else "RGB")
    assert converted.size == (8, 6)
    if mode in ("L", "I;16", "F", "RGB"):
        luminance = np.asarray(converted.convert("L"), dtype=np.int64)
        assert np.abs(luminance - np.rint(gray)).max() <= 1


def test_to_num_channels_rejects_other_counts():
    with pytest.raises(ValueError, match="num_channels=2"):
        to_num_channels(Image.new("RGB", (4, 4)), 2)


def test_random_resized_crop_box_is_seeded_and_in_bounds():
    torch.manual_seed(0)
    boxes = [random_resized_crop_box(64, 48, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(200)]
    torch.manual_seed(0)
    assert boxes == [random_resized_crop_box(64, 48, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(200)]
    for top, left, h, w in boxes:
        assert 0 <= top <= 48 - h and 0 <= left <= 64 - w
        assert 0.2 * 64 * 48 * 0.8 <= h * w <= 64 * 48
        assert 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
    # A 1-pixel-high strip admits no box with that aspect ratio: the central-crop fallback keeps ratio 4/3.
    assert random_resized_crop_box(100, 1, (0.2, 1.0), (3 / 4, 4 / 3)) == (0, 49, 1, 1)
    assert random_resized_crop_box(3, 30, (0.9, 1.0), (3 / 4, 4 / 3)) == (13, 0, 4, 3)


def _ks_uniform(samples: np.ndarray, low: float, high: float) -> float:
    """Kolmogorov-Smirnov distance between the samples and U(low, high)."""
    values = np.sort((samples - low) / (high - low))
    ranks = np.arange(1, len(values) + 1) / len(values)
    return float(max(np.abs(ranks - values).max(), np.abs(ranks - 1 / len(values) - values).max()))


def test_train_crop_draws_maes_area_aspect_and_flip_distributions():
    """MAE: RandomResizedCrop(scale=(0.2, 1.0), ratio=(3/4, 4/3)) and RandomHorizontalFlip(p=0.5).

    On a 1000 x 1000 image every draw with area fraction <= 0.75^2 fits at any allowed aspect ratio, so there the
    area fraction is uniform on [0.2, 0.5625] and the log aspect ratio uniform on [log 3/4, log 4/3], whatever retries
    the larger draws needed.
    """
    torch.manual_seed(0)
    boxes = np.array([random_resized_crop_box(1000, 1000, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(3000)])
    area = boxes[:, 2] * boxes[:, 3] / 1e6
    log_ratio = np.log(boxes[:, 3] / boxes[:, 2])
    assert area.min() > 0.2 - 0.003 and area.max() <= 1.0
    assert np.abs(log_ratio).max() < math.log(4 / 3) + 0.003
    small = area <= 0.5625
    critical = 1.63 / math.sqrt(small.sum())  # KS at the 1% level
    assert _ks_uniform(area[small], 0.2, 0.5625) < critical
    assert _ks_uniform(log_ratio[small], math.log(3 / 4), math.log(4 / 3)) < critical
    # Uniform area on [0.2, 1] with rejections only above 0.5625: at least (0.5625 - 0.2) / 0.8 of draws fall below.
    assert small.mean() > 0.45

    ramp = Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1)), "L")
    crop = TrainCrop(32, 1, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.manual_seed(0)
    views = torch.stack([crop(ramp) for _ in range(1000)])
    assert views.dtype == torch.uint8 and views.shape == (1000, 1, 32, 32)
    flipped = views[:, 0, 0, 0] > views[:, 0, 0, -1]
    assert torch.equal(views[~flipped], torch.from_numpy(np.array(ramp))[None].expand(int((~flipped).sum()), 1, -1, -1))
    assert abs(flipped.float().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(1000)


def test_train_crop_is_one_bicubic_resize_of_the_seeded_box():
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    crop = TrainCrop(16, 3)
    torch.manual_seed(1)
    first = crop(image)
    torch.manual_seed(1)
    top, left, h, w = random_resized_crop_box(40, 30, crop.scale, crop.ratio)
    flip = torch.rand(1).item() < 0.5
    expected = np.asarray(image.resize((16, 16), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h)))
    expected = torch.from_numpy(expected[:, ::-1].copy() if flip else expected.copy()).permute(2, 0, 1)
    assert first.dtype == torch.uint8 and torch.equal(first, expected)
    gray_for_rgb = crop(Image.new("L", (30, 40), 204))
    assert torch.equal(gray_for_rgb, torch.full((3, 16, 16), 204, dtype=torch.uint8))


def mae_eval_view(image: Image.Image, input_size: int) -> np.ndarray:
    """MAE's evaluation transform (main_linprobe.py / main_finetune.py's build_transform, crop_pct 224 / 256) without
    its normalisation: torchvision's Resize of the shorter side, bicubic, then CenterCrop."""
    from torchvision import transforms

    size = int(input_size / (224 / 256))
    resize = transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC)
    return np.asarray(transforms.CenterCrop(input_size)(resize(image)))


@pytest.mark.parametrize("size, input_size", [((28, 28), 28), ((300, 400), 224), ((375, 500), 224), ((29, 61), 28)])
def test_eval_crop_is_maes_resize_then_center_crop_at_every_size(size, input_size):
    height, width = size
    pixels = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    for mode, channels in (("RGB", 3), ("L", 1)):
        image = Image.fromarray(pixels, "RGB").convert(mode)
        ours = EvalCrop(input_size, channels)(image).permute(1, 2, 0).numpy()
        assert np.array_equal(ours.squeeze(-1) if channels == 1 else ours, mae_eval_view(image, input_size))


def mae_one_draw_box(width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
    """MAE's util/crop.py RandomResizedCrop.get_params, transcribed: (i, j, h, w)."""
    area = height * width
    target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
    log_ratio = torch.log(torch.tensor(ratio))
    aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
    w = min(int(round(math.sqrt(target_area * aspect_ratio))), width)
    h = min(int(round(math.sqrt(target_area / aspect_ratio))), height)
    i = torch.randint(0, height - h + 1, size=(1,)).item()
    j = torch.randint(0, width - w + 1, size=(1,)).item()
    return i, j, h, w


def test_the_linear_probe_crop_box_is_maes_one_clamped_draw():
    boxes = {}
    for width, height in ((500, 375), (28, 28), (1000, 40)):
        for seed in range(50):
            torch.manual_seed(seed)
            expected = mae_one_draw_box(width, height, (0.08, 1.0), (3 / 4, 4 / 3))
            torch.manual_seed(seed)
            assert one_draw_crop_box(width, height, (0.08, 1.0), (3 / 4, 4 / 3)) == expected
        torch.manual_seed(0)
        boxes[width] = [one_draw_crop_box(width, height, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(2000)]
    # On a 500x375 photo a fifth of MAE's boxes span the full width or height (torchvision's: under 1%).
    spanning = np.mean([h == 375 or w == 500 for _, _, h, w in boxes[500]])
    assert 0.15 < spanning < 0.35
    torch.manual_seed(0)
    torchvision_boxes = [random_resized_crop_box(500, 375, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(2000)]
    assert np.mean([h == 375 or w == 500 for _, _, h, w in torchvision_boxes]) < 0.02


def test_a_one_draw_train_crop_takes_maes_box_then_the_flip():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 60), dtype=np.uint8), "L")
    torch.manual_seed(3)
    top, left, h, w = mae_one_draw_box(60, 40, (0.08, 1.0), (3 / 4, 4 / 3))
    flip = torch.rand(1).item() < 0.5
    expected = np.asarray(image.resize((16, 16), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h)))
    torch.manual_seed(3)
    crop = TrainCrop(16, 1, scale=(0.08, 1.0), one_draw=True)(image)[0].numpy()
    assert np.array_equal(crop, expected[:, ::-1] if flip else expected)

    with pytest.raises(ValueError, match="num_channels=2"):
        EvalCrop(28, 2)


def test_normalizer_matches_float_normalisation_and_passes_floats_through():
    normalizer = PixelNormalizer([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    pixels = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    output = normalizer(pixels)
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, (pixels.float() / 255 - mean) / std, rtol=0, atol=2e-6)
    floats = torch.randn(2, 3, 5, 5)
    assert normalizer(floats) is floats
    with pytest.raises(ValueError, match="1 channels"):
        normalizer(pixels[:, :1])
    with pytest.raises(ValueError, match="std > 0"):
        PixelNormalizer([0.5], [0.0])


@pytest.fixture
def odd_files(tmp_path):
    """Readable grayscale, RGBA, 16-bit PNG and JPEG files, plus a corrupt file and a truncated JPEG."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    paths = {
        "gray": tmp_path / "gray.png",
        "rgba": tmp_path / "rgba.png",
        "deep": tmp_path / "deep.png",
        "jpeg": tmp_path / "photo.jpg",
    }
    Image.fromarray(photo[..., 0], "L").save(paths["gray"])
    Image.fromarray(np.dstack([photo, photo[..., :1]]), "RGBA").save(paths["rgba"])
    Image.fromarray(photo[..., 0].astype(np.uint16) * 257).save(paths["deep"])
    Image.fromarray(photo, "RGB").save(paths["jpeg"], quality=90)
    paths["corrupt"] = tmp_path / "corrupt.jpg"
    paths["corrupt"].write_bytes(b"not an image")
    paths["truncated"] = tmp_path / "truncated.jpg"
    paths["truncated"].write_bytes(paths["jpeg"].read_bytes()[:300])
    return paths


def test_any_readable_file_decodes_and_bad_ones_name_themselves(odd_files):
    for name in ("gray", "rgba", "deep", "jpeg"):
        image = decode_image(str(odd_files[name]))
        assert to_num_channels(image, 3).size == (48, 40), name
    deep = np.asarray(to_num_channels(decode_image(str(odd_files["deep"])), 1))
    np.testing.assert_array_equal(deep, np.asarray(decode_image(str(odd_files["gray"]))))
    for name in ("corrupt", "truncated"):
        with pytest.raises(UnreadableImageError, match=str(odd_files[name])) as error:
            decode_image({"bytes": None, "path": str(odd_files[name])})
        assert "\n" not in str(error.value)
    with pytest.raises(UnreadableImageError, match="example 3"):
        decode_image({"bytes": b"junk", "path": None}, 3)


def test_counts_of_unreadable_images_reach_the_main_process_from_workers(odd_files):
    files = [str(odd_files[name]) for name in ("gray", "corrupt", "rgba", "truncated", "deep", "jpeg")]
    loader = DataLoader(
        ImageDataset(files, TrainCrop(16, 3)), batch_size=3, num_workers=1, collate_fn=collate_pixel_values
    )
    batches = list(loader)
    assert [batch["pixel_values"].shape for batch in batches] == [(3, 3, 16, 16)] * 2
    names = [name for batch in batches for name in batch.get("unreadable_images", [])]
    assert names == [files[1], files[3]]
    strict = DataLoader(
        ImageDataset(files, TrainCrop(16, 3), strict=True), batch_size=3, collate_fn=collate_pixel_values
    )
    with pytest.raises(UnreadableImageError, match="corrupt.jpg"):
        list(strict)
    with pytest.raises(UnreadableImageError, match="2 unreadable images in a row"):
        ImageDataset([files[1], files[3]], TrainCrop(16, 3))[0]


def test_consecutive_bad_files_are_each_named_once_per_index_and_decoded_once(odd_files, caplog):
    """Index 1 meets both bad files, index 2 the second again: names, not counts, let the trainer count each once."""
    files = [str(odd_files[name]) for name in ("gray", "corrupt", "truncated", "jpeg")]
    dataset = ImageDataset(files, TrainCrop(16, 3))
    with caplog.at_level("WARNING", logger="modeling_gpa.data.pipeline"):
        rows = [dataset[index] for index in (0, 1, 2, 3, 1, 2)]
    assert [row.get("unreadable_images") for row in rows] == [
        None,
        files[1:3],
        files[2:3],
        None,
        files[1:3],
        files[2:3],
    ]
    # Each bad file is decoded (and warned about) once per process.
    assert caplog.text.count("corrupt.jpg") == 1 and caplog.text.count("truncated.jpg") == 1
    assert collate_pixel_values(rows)["unreadable_images"] == [*files[1:3], files[2], *files[1:3], files[2]]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoding_turns_a_photo_upright_by_its_exif_orientation(tmp_path, orientation, save_rotated):
    upright = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8), "RGB")
    save_rotated(upright, orientation, tmp_path / "photo.png")
    decoded = decode_image(str(tmp_path / "photo.png"))
    assert decoded.size == (40, 24)
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(upright))


def test_an_image_above_pils_bomb_limit_is_named_in_one_warning_per_process(tmp_path, caplog):
    import warnings

    path = tmp_path / "panorama.png"
    Image.new("L", (10_000, 10_000)).save(path)
    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level("WARNING", logger="modeling_gpa.data.pipeline"),
    ):
        warnings.simplefilter("always")
        for _ in range(2):
            assert decode_image(str(path)).size == (10_000, 10_000)
    assert not [warning for warning in caught if issubclass(warning.category, Image.DecompressionBombWarning)]
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"Image {path} is 10000x10000 (100 megapixels, above PIL's 89-")
