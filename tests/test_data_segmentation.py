import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_gpa.data.segmentation import (
    IGNORE_INDEX,
    SegmentationTransform,
    collate_segmentation,
    load_ade_folder,
    segmentation_batch_transform,
)


def write_ade_folder(root, sizes=((48, 40), (40, 48), (56, 56))):
    """ADEChallengeData2016's layout: left half class 1, right half class 2, a 0 ("other") stripe at the top."""
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for index, (width, height) in enumerate(sizes):
            annotation = np.full((height, width), 2, dtype=np.uint8)
            annotation[:, : width // 2] = 1
            annotation[:4] = 0
            image = np.where(annotation[..., None] == 1, 220, 30).astype(np.uint8).repeat(3, axis=2)
            Image.fromarray(image).save(root / "images" / split / f"ADE_{split}_{index:08d}.jpg", quality=95)
            Image.fromarray(annotation).save(root / "annotations" / split / f"ADE_{split}_{index:08d}.png")
    return root


def transform(train, crop=32):
    return SegmentationTransform(crop, (64, 32), (0.5,) * 3, (0.25,) * 3, train=train)


def test_ade_folder_pairs_images_with_annotations_and_the_transform_keeps_them_aligned(tmp_path):
    dataset = load_ade_folder(str(write_ade_folder(tmp_path / "ADEChallengeData2016")))
    assert {split: len(rows) for split, rows in dataset.items()} == {"train": 3, "validation": 3}
    torch.manual_seed(0)
    train = dataset["train"].with_transform(segmentation_batch_transform(transform(True), 2, True, 3))
    batch = collate_segmentation([train[index] for index in range(3)] * 4)
    assert batch["pixel_values"].shape == (12, 3, 32, 32) and batch["labels"].shape == (12, 32, 32)
    labels, gray = batch["labels"], batch["pixel_values"].mean(1)
    # reduce_labels: class 1 -> 0, class 2 -> 1, "other" (0) and the crop's padding -> 255.
    assert set(labels.unique().tolist()) <= {0, 1, IGNORE_INDEX} and (labels == IGNORE_INDEX).any()
    # Whatever the rescale, crop and flip, the bright pixels are still those labelled 0 (the bright class 1).
    assert gray[labels == 0].mean() > gray[labels == 1].mean() + 1.0
    validation = dataset["validation"].with_transform(segmentation_batch_transform(transform(False), 2, True, 3))
    row = validation[0]
    assert row["labels"].shape == (40, 48) and row["pixel_values"].shape[-2:] == (32, 38)


def test_one_line_errors_for_a_missing_folder_a_size_mismatch_and_labels_outside_num_labels(tmp_path):
    root = write_ade_folder(tmp_path / "ade")
    shutil.rmtree(root / "annotations" / "validation")
    with pytest.raises(ValueError, match="no folder .*annotations/validation: pass the ADEChallengeData2016 folder"):
        load_ade_folder(str(root))
    apply = segmentation_batch_transform(transform(False), 2, False, 3)
    image = Image.open(next((root / "images" / "training").iterdir()))
    with pytest.raises(ValueError, match="annotation is 10x10 but its image 48x40"):
        apply({"image": [image], "annotation": [Image.new("L", (10, 10))]})
    with pytest.raises(ValueError, match="label 2 is outside num_labels=2 .* --num_labels or --do_reduce_labels"):
        apply({"image": [image], "annotation": [Image.new("L", (48, 40), 2)]})
