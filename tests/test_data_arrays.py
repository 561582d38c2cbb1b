"""Datasets from uint8 arrays: images open as the same pixels, labels become a ClassLabel column."""

import numpy as np
import pytest

from modeling_gpa.data.arrays import arrays_to_dataset, encode_gray_images


@pytest.mark.parametrize("image_format", ["pgm", "png"])
def test_encoded_images_decode_to_the_same_pixels(image_format):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7), dtype=np.uint8)
    png_columns = ("image",) if image_format == "png" else ()
    dataset = arrays_to_dataset({"image": images, "label": np.array([2, 0, 1])}, ["a", "b", "c"], png_columns)
    assert dataset.features["label"].names == ["a", "b", "c"] and dataset["label"] == [2, 0, 1]
    for index, image in enumerate(dataset["image"]):
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), images[index])


def test_bad_arrays_and_formats_say_what_is_expected():
    with pytest.raises(ValueError, match=r"expected \(N, H, W\) uint8 images"):
        encode_gray_images(np.zeros((2, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="use 'pgm' or 'png'"):
        encode_gray_images(np.zeros((2, 4, 4), dtype=np.uint8), "jpeg")
