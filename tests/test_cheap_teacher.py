import pytest
import torch
from tiny import TINY, tiny_kwargs
from torch.nn import functional
from transformers import ViTConfig, ViTMAEConfig, ViTMAEModel, ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.teacher import teacher_scores


def pixels(batch=3, seed=0):
    return torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [15, 28, 32, 0, -4, True, 16.0, "16"])
def test_invalid_teacher_image_size_raises_naming_the_field(size):
    with pytest.raises(ValueError, match=r"GPAConfig\.gpa_teacher_image_size=.*multiple of patch_size 4 smaller than"):
        GPAConfig(**tiny_kwargs(gpa_teacher_image_size=size))


def test_valid_sizes_round_trip(tmp_path):
    for size in (None, 8, 16, 24):
        GPAConfig(**tiny_kwargs(gpa_teacher_image_size=size))
    GPAConfig(**tiny_kwargs(gpa_teacher_image_size=16)).save_pretrained(tmp_path)
    assert GPAConfig.from_pretrained(tmp_path).gpa_teacher_image_size == 16
    assert GPAConfig().gpa_teacher_image_size is None


def test_scores_are_the_small_map_upsampled_to_the_student_grid():
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_teacher_image_size=16))).eval()
    images = pixels()
    small = teacher_scores(
        model.vit,
        functional.interpolate(images, size=(16, 16), mode="area"),
        layer=2,
        head=3,
        interpolate_pos_encoding=True,
    )
    scores = model.compute_gpa(images)
    assert small.shape == (3, 16) and scores.shape == (3, 49) and scores.dtype == torch.float32
    grid = scores.view(3, 7, 7)
    # Bilinear upsampling (align_corners=False) copies the corner patches of the 4x4 map to the 7x7 map's corners.
    corners = grid[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, small.view(3, 4, 4)[:, [0, 0, -1, -1], [0, -1, 0, -1]])
    expected = functional.interpolate(small.view(3, 1, 4, 4), size=(7, 7), mode="bilinear", align_corners=False)
    torch.testing.assert_close(scores, expected.flatten(1))
    # Without the field the teacher scores the student's own image.
    exact = GPAForPreTraining(GPAConfig(**tiny_kwargs())).eval()
    exact.load_state_dict(model.state_dict())
    torch.testing.assert_close(exact.compute_gpa(images), teacher_scores(model.vit, images, layer=2, head=3))


def test_the_teacher_runs_on_the_smaller_token_count():
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_teacher="ema", gpa_teacher_image_size=12))).eval()
    seen = []
    model.teacher.layers[0].register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    model.compute_gpa(pixels())
    assert seen == [torch.Size([3, 1 + 9, 32])]


@pytest.mark.parametrize("kind", ["vit_mae", "vit"])
def test_pretrained_teachers_score_the_smaller_image(tmp_path, kind):
    torch.manual_seed(0)
    encoder_keys = {key: value for key, value in TINY.items() if not key.startswith("decoder")}
    if kind == "vit":
        ViTModel(ViTConfig(**encoder_keys), add_pooling_layer=False).save_pretrained(tmp_path)
    else:
        ViTMAEModel(ViTMAEConfig(**encoder_keys)).save_pretrained(tmp_path)
    config = GPAConfig(
        **tiny_kwargs(gpa_teacher="pretrained", gpa_teacher_name_or_path=str(tmp_path), gpa_teacher_image_size=16)
    )
    model = GPAForPreTraining(config).eval()
    scores = model.compute_gpa(pixels())
    assert scores.shape == (3, 49) and torch.isfinite(scores).all()
    assert scores.std(dim=-1).min() > 0


def test_training_step_with_the_cheaper_teacher():
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_teacher_image_size=16)))
    output = model(pixels(), mask_progress=0.5)
    assert torch.isfinite(output.loss) and output.gpa_loss is not None
    assert output.mask.sum(dim=-1).tolist() == [37.0, 37.0, 37.0]
    output.loss.backward()
    assert model.vit.layers[0].attention.q_proj.weight.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.compute_gpa(pixels()).dtype == torch.float32
