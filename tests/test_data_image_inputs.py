import numpy as np
import pytest
import torch
from PIL import Image
from tiny import tiny_kwargs
from transformers import ViTMAEConfig

from modeling_gpa.data import FASHION_MNIST_MEAN, IMAGENET_MEAN, build_image_processor
from modeling_gpa.data.image_inputs import ImageSettings, resize_masks


def test_defaults_follow_the_training_processor_and_a_saved_processor_wins(tmp_path):
    gray, rgb = ViTMAEConfig(**tiny_kwargs()), ViTMAEConfig(**tiny_kwargs(num_channels=3))
    assert ImageSettings.from_pretrained(str(tmp_path), gray).image_mean == FASHION_MNIST_MEAN
    assert ImageSettings.from_pretrained(str(tmp_path), rgb).image_mean == IMAGENET_MEAN
    build_image_processor(64, 1, mean=[0.25], std=[0.5]).save_pretrained(tmp_path)
    settings = ImageSettings.from_pretrained(str(tmp_path), gray)
    # The model's grid decides the size, whatever the processor resized to.
    assert settings == ImageSettings((28, 28), 1, (0.25,), (0.5,))


def test_rgb_statistics_average_for_a_gray_model_and_other_mismatches_fail():
    config = ViTMAEConfig(**tiny_kwargs())
    assert ImageSettings.for_config(config, [0.1, 0.2, 0.6], [0.3, 0.3, 0.3]).image_mean == pytest.approx((0.3,))
    with pytest.raises(ValueError, match="image_mean has 2 values but the model has 1 channels"):
        ImageSettings.for_config(config, [0.1, 0.2], 0.5)


def test_pixel_values_convert_resize_normalise_and_display_round_trips():
    settings = ImageSettings((4, 6), 1, (0.5,), (0.25,))
    rgb = Image.fromarray(np.full((8, 12, 3), [255, 0, 0], dtype=np.uint8))
    pixel_values = settings.to_pixel_values([rgb, Image.new("L", (6, 4), 51)])
    assert pixel_values.shape == (2, 1, 4, 6)
    # PIL's luminance of pure red is 76/255; 51/255 = 0.2.
    torch.testing.assert_close(pixel_values[0], torch.full((1, 4, 6), (76 / 255 - 0.5) / 0.25))
    torch.testing.assert_close(pixel_values[1], torch.full((1, 4, 6), (0.2 - 0.5) / 0.25))
    display = settings.to_display(pixel_values)
    assert display.shape == (2, 4, 6, 1)
    np.testing.assert_allclose(display[1], 0.2, atol=1e-6)


def test_resize_masks_is_area_weighted():
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True  # a whole 2x2 block -> one pixel
    mask[2, 2] = True  # a quarter of a block -> nothing
    mask[0, 2:] = True  # half of a block -> counts
    resized = resize_masks([mask], (2, 2))
    assert resized.tolist() == [[[True, True], [False, False]]]
