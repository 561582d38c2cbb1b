import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from tiny import garment_dataset, garment_model_inputs

from modeling_gpa.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from modeling_gpa.data.ground_truth import (
    annotated_model_inputs,
    masks_from_boxes,
    masks_from_dataset,
    masks_from_folder,
    object_patches,
)
from modeling_gpa.data.image_inputs import ImageSettings


def test_object_patches_by_hand():
    # 4x4 pixels, 2x2 patches. Patch 0 (top-left) has 2 object pixels, patch 1 has 4, patch 2 has 1, patch 3 none.
    mask = torch.tensor(
        [
            [1, 0, 1, 1],
            [1, 0, 1, 1],
            [0, 0, 0, 0],
            [1, 0, 0, 0],
        ],
        dtype=torch.bool,
    ).unsqueeze(0)
    assert object_patches(mask, 2).tolist() == [[True, True, False, False]]
    assert object_patches(mask, 2, min_fraction=0.75).tolist() == [[False, True, False, False]]
    assert object_patches(mask, 2, min_fraction=0.25).tolist() == [[True, True, True, False]]
    assert object_patches(mask, (2, 4)).tolist() == [[True, False]]


def test_object_patches_rejects_bad_shapes():
    with pytest.raises(ValueError, match="does not split into 3x3 patches"):
        object_patches(torch.zeros(1, 4, 4, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match=r"must be \(B, H, W\)"):
        object_patches(torch.zeros(4, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="min_fraction=0 is invalid"):
        object_patches(torch.zeros(1, 4, 4, dtype=torch.bool), 2, min_fraction=0)


def save(array: np.ndarray, path) -> None:
    Image.fromarray(array).save(path)


def test_masks_from_folder_reads_0_255_0_1_and_jpeg_masks(tmp_path):
    (tmp_path / "masks").mkdir()
    square = np.zeros((20, 30), dtype=np.uint8)
    square[5:15, 10:20] = 255
    for stem in ("a", "b", "c"):
        save(np.stack([square] * 3, axis=-1), tmp_path / f"{stem}.jpg")
    save(square, tmp_path / "masks" / "a.png")
    save((square > 0).astype(np.uint8), tmp_path / "masks" / "b.png")
    Image.fromarray(square).save(tmp_path / "masks" / "c.jpg", quality=60)
    annotated = masks_from_folder(str(tmp_path))
    assert annotated.names == ["a.jpg", "b.jpg", "c.jpg"]
    for mask in annotated.masks:
        assert mask.shape == (20, 30)
        np.testing.assert_array_equal(mask, square > 0)


def test_masks_from_folder_errors_name_the_missing_or_mismatched_file(tmp_path):
    (tmp_path / "masks").mkdir()
    save(np.zeros((8, 8), np.uint8), tmp_path / "a.png")
    save(np.zeros((8, 8), np.uint8), tmp_path / "b.png")
    save(np.zeros((8, 8), np.uint8), tmp_path / "masks" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images .* \(first: 'b.png', expected b.png\)"):
        masks_from_folder(str(tmp_path))
    save(np.zeros((4, 8), np.uint8), tmp_path / "masks" / "b.png")
    with pytest.raises(ValueError, match="mask of 'b.png' is 8x4 but the image is 8x8"):
        masks_from_folder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mask directory"):
        masks_from_folder(str(tmp_path), str(tmp_path / "nowhere"))


def test_masks_from_boxes_union_exclusive_ends_clipping_and_fractions(tmp_path):
    save(np.zeros((10, 12), np.uint8), tmp_path / "x.png")
    save(np.zeros((6, 6), np.uint8), tmp_path / "y.png")
    boxes = {"x.png": [[0, 0, 2, 2], [1, 1, 3, 3]], "y.png": [[4.5, 4.2, 9, 9]]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    annotated = masks_from_boxes(str(tmp_path), str(tmp_path / "boxes.json"))
    assert annotated.names == ["x.png", "y.png"]
    x_mask, y_mask = annotated.masks
    assert x_mask.shape == (10, 12) and x_mask.sum() == 4 + 4 - 1
    assert x_mask[0, 0] and x_mask[2, 2] and not x_mask[0, 2] and not x_mask[3, 3]
    # Fractional starts grow down to whole pixels (4), the end clips to the 6x6 image: rows/cols 4..5.
    assert y_mask.sum() == 4 and y_mask[4:, 4:].all()


@pytest.mark.parametrize(
    "boxes, message",
    [
        ({"x.png": [[3, 0, 1, 2]]}, r"box 0 of 'x.png' is \[3, 0, 1, 2\]; expected \[x0, y0, x1, y1\]"),
        ({"x.png": [[0, 0, 1]]}, "box 0 of 'x.png'"),
        ({"x.png": {"box": 1}}, "boxes of 'x.png' must be a list"),
        ({"missing.png": [[0, 0, 1, 1]]}, "names 'missing.png', which is not in"),
        ([], "must hold"),
    ],
)
def test_masks_from_boxes_bad_files(tmp_path, boxes, message):
    save(np.zeros((4, 4), np.uint8), tmp_path / "x.png")
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        masks_from_boxes(str(tmp_path), str(tmp_path / "boxes.json"))


def test_masks_from_boxes_reports_unreadable_json(tmp_path):
    (tmp_path / "boxes.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        masks_from_boxes(str(tmp_path), str(tmp_path / "boxes.json"))


def garments() -> Dataset:
    images, masks = [], []
    for size in (6, 10):
        image = np.zeros((28, 28), np.uint8)
        image[2 : 2 + size, 3 : 3 + size] = 200
        mask = np.zeros_like(image)
        mask[2 : 2 + size, 3 : 3 + size // 2] = 255
        images.append(Image.fromarray(image))
        masks.append(Image.fromarray(mask))
    return Dataset.from_dict({"image": images, "object_mask": masks})


def test_masks_from_dataset_column_nonzero_pixels_and_transforms_ignored():
    dataset = garments().with_transform(lambda batch: {"pixel_values": [0] * len(batch["image"])})
    with_column = masks_from_dataset(dataset, [1])
    assert with_column.masks[0].sum() == 10 * 5 and with_column.names == ["row 1"]
    nonzero = masks_from_dataset(dataset, mask_column=None)
    assert [m.sum() for m in nonzero.masks] == [36, 100]
    plain = masks_from_dataset(garments().remove_columns("object_mask"))
    assert [m.sum() for m in plain.masks] == [36, 100]
    with pytest.raises(ValueError, match="no 'segmentation' column"):
        masks_from_dataset(garments(), mask_column="segmentation")


def test_model_inputs_keep_image_and_mask_aligned():
    # A 56x56 image whose left half is the object becomes 28x28 with object pixel columns 0..13. With 4x4 patches,
    # patch columns 0..2 are whole object, column 3 (pixels 12..15) is half object, which counts, the rest is not.
    image = np.zeros((56, 56), np.uint8)
    image[:, :28] = 255
    dataset = Dataset.from_dict({"image": [Image.fromarray(image)]})
    annotated = masks_from_dataset(dataset, mask_column=None)

    class Config:
        image_size, num_channels = 28, 1

    settings = ImageSettings.for_config(Config, image_mean=0.0, image_std=1.0)
    pixel_values, objects = annotated.to_model_inputs(settings, 4)
    assert pixel_values.shape == (1, 1, 28, 28)
    assert pixel_values[0, 0, :, :12].min() > 0.9 and pixel_values[0, 0, :, 16:].max() < 0.1
    grid = objects.view(7, 7)
    assert grid[:, :4].all() and not grid[:, 4:].any()
    assert not annotated.to_model_inputs(settings, 4, min_fraction=0.75)[1].view(7, 7)[:, 3].any()


class GarmentConfig:
    image_size, num_channels = 28, 1


def test_annotated_model_inputs_draw_the_seeded_rows_selection_images_first():
    dataset = garment_dataset(30)
    settings = ImageSettings.for_config(GarmentConfig, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    pixel_values, objects = annotated_model_inputs(22, settings, 4, dataset=dataset, seed=1)
    expected_pixels, expected_objects = garment_model_inputs(dataset, np.random.default_rng(1).permutation(30)[:22])
    torch.testing.assert_close(pixel_values, expected_pixels, atol=1e-6, rtol=0)
    assert torch.equal(objects, expected_objects)
    # A draw of 10 is the first 10 of the draw of 22: the selection images, the rest held out.
    selection_pixels, selection_objects = annotated_model_inputs(10, settings, 4, dataset=dataset, seed=1)
    assert torch.equal(selection_pixels, pixel_values[:10]) and torch.equal(selection_objects, objects[:10])
    other, _ = annotated_model_inputs(10, settings, 4, dataset=dataset, seed=2)
    assert not torch.equal(other, selection_pixels)


def test_annotated_model_inputs_take_plain_fashion_mnist_garment_pixels():
    dataset = garment_dataset(6).remove_columns("object_mask")
    settings = ImageSettings.for_config(GarmentConfig)
    _, objects = annotated_model_inputs(6, settings, 4, dataset=dataset)
    rows = np.random.default_rng(0).permutation(6).tolist()
    rectangles = torch.stack([torch.from_numpy(np.asarray(dataset[i]["image"]) > 0) for i in rows])
    assert torch.equal(objects, object_patches(rectangles, 4))


def test_annotated_model_inputs_read_a_masks_folder_or_a_boxes_json(tmp_path, annotated_folder):
    # Rectangles on black: the masks folder (their pixels) and the boxes (their bounding boxes) give the same objects.
    annotated_folder(tmp_path)
    settings = ImageSettings.for_config(GarmentConfig)
    from_masks = annotated_model_inputs(4, settings, 4, image_dir=str(tmp_path), seed=5)
    from_boxes = annotated_model_inputs(
        4, settings, 4, image_dir=str(tmp_path), boxes_json=str(tmp_path / "boxes.json"), seed=5
    )
    rows = np.random.default_rng(5).permutation(6)[:4].tolist()
    folder = masks_from_folder(str(tmp_path)).subset(rows).to_model_inputs(settings, 4)
    for drawn in (from_masks, from_boxes):
        assert torch.equal(drawn[0], folder[0]) and torch.equal(drawn[1], folder[1])
    with pytest.raises(FileNotFoundError, match="mask directory"):
        annotated_model_inputs(4, settings, 4, image_dir=str(tmp_path), masks_dir=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="pass image_dir too"):
        annotated_model_inputs(4, settings, 4, dataset=garment_dataset(6), boxes_json=str(tmp_path / "boxes.json"))


def test_annotated_model_inputs_too_few_images_and_natural_images_fail_clearly():
    settings = ImageSettings.for_config(GarmentConfig)
    with pytest.raises(ValueError, match="need 25 annotated images but 6 are available"):
        annotated_model_inputs(25, settings, 4, dataset=garment_dataset(6))
    with pytest.raises(ValueError, match="need 0 annotated images"):
        annotated_model_inputs(0, settings, 4, dataset=garment_dataset(6))
    with pytest.raises(ValueError, match="no annotated images"):
        annotated_model_inputs(2, settings, 4)
    noisy = Dataset.from_dict({"image": [Image.fromarray(np.full((28, 28), 90, np.uint8))] * 3})
    with pytest.raises(ValueError, match="no black background"):
        annotated_model_inputs(3, settings, 4, dataset=noisy)
