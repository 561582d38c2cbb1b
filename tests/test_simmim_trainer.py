import pytest
import torch
from tiny import swin_student
from transformers import (
    ViTConfig,
    ViTForMaskedImageModeling,
)

from modeling_gpa.masking import MaskSchedule
from modeling_gpa.simmim.masking import simmim_mask_count
from modeling_gpa.simmim.trainer import SimMIMMasker, SimMIMMaskSettings
from modeling_gpa.teacher import query_key_at, teacher_scores


def vit_student(image_size=32, patch_size=4, seed=0):
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        encoder_stride=patch_size,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return ViTForMaskedImageModeling(config)


@pytest.fixture(scope="module")
def mae_teacher_dir(tmp_path_factory, save_mae_teacher):
    return save_mae_teacher(tmp_path_factory.mktemp("teacher"), num_hidden_layers=3)


def test_self_and_ema_teachers_score_the_vit_students_encoder():
    student = vit_student()
    pixel_values = torch.randn(2, 1, 32, 32)
    # query_key_at works on a SimMIM ViT's encoder (a ViTModel with a mask token).
    query, key = query_key_at(student.vit, pixel_values, 1)
    assert query.shape == key.shape == (2, 2, 1 + 64, 16)
    expected = teacher_scores(student.vit, pixel_values, layer=1, head=-1)
    for teacher in ("self", "ema"):
        settings = SimMIMMaskSettings(image_size=32, mask_patch_size=8, model_patch_size=4, teacher=teacher)
        masker = SimMIMMasker(settings, student, num_channels=1)
        assert torch.equal(masker.scores(pixel_values, student), expected)
        masked = masker(pixel_values, 0.5, student)
        assert (masked.sum(1) == simmim_mask_count(16, 0.6) * 4).all()


def test_ema_teacher_steps_towards_the_student():
    student = vit_student()
    settings = SimMIMMaskSettings(image_size=32, mask_patch_size=8, model_patch_size=4, teacher="ema", ema_momentum=0.9)
    masker = SimMIMMasker(settings, student, num_channels=1)
    before = masker.teacher.layers[0].attention.q_proj.weight.clone()
    with torch.no_grad():
        student.vit.layers[0].attention.q_proj.weight.add_(1.0)
    masker.update_teacher(student)
    after = masker.teacher.layers[0].attention.q_proj.weight
    assert torch.allclose(after, before + 0.1, atol=1e-6)
    assert not any(p.requires_grad for p in masker.teacher.parameters())


def test_teacher_runs_only_to_the_scored_block(mae_teacher_dir):
    student = swin_student()
    settings = SimMIMMaskSettings(
        image_size=64, mask_patch_size=16, model_patch_size=4, teacher_name_or_path=mae_teacher_dir, layer=1
    )
    masker = SimMIMMasker(settings, student, num_channels=1)
    calls = []
    for index, block in enumerate(masker.teacher.layers):
        block.register_forward_hook(lambda *args, index=index: calls.append(index))
    masker(torch.randn(2, 1, 64, 64), 0.0, student)
    assert calls == [0]


def test_pretrained_teacher_for_a_swin_student_at_another_grid(mae_teacher_dir):
    """A 4x4 teacher grid (patch 16) masks a Swin student with patch 4 and mask patches of 8 (an 8x8 mask grid)."""
    student = swin_student()
    settings = SimMIMMaskSettings(
        image_size=64,
        mask_patch_size=8,
        model_patch_size=4,
        teacher_name_or_path=mae_teacher_dir,
        schedule=MaskSchedule(1.0, 1.0, 0.0, 0.0),
    )
    masker = SimMIMMasker(settings, student, num_channels=1)
    pixel_values = torch.randn(3, 1, 64, 64)
    masked = masker(pixel_values, 1.0, student)
    assert masked.shape == (3, 256)
    assert (masked.sum(1) == simmim_mask_count(64, 0.6) * 4).all()
    # All hard: whole teacher patches (2x2 mask patches each) go first, by teacher score.
    scores = masker.scores(pixel_values, student)
    teacher_masked = masked.view(3, 4, 4, 4, 4).all(dim=(2, 4)).flatten(1)
    top = scores.topk(simmim_mask_count(64, 0.6) // 4, dim=1).indices
    assert torch.gather(teacher_masked, 1, top).all()


def test_teachers_that_need_a_vit_student_refuse_a_swin():
    with pytest.raises(ValueError, match="ViT student"):
        SimMIMMasker(
            SimMIMMaskSettings(image_size=64, mask_patch_size=16, model_patch_size=4, teacher="self"),
            swin_student(),
            num_channels=1,
        )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(method="hpm"), "mask_method"),
        (dict(teacher="frozen"), "gpa_teacher"),
        (dict(teacher="pretrained"), "gpa_teacher_name_or_path"),
        (dict(teacher="self", schedule=MaskSchedule(0.8, 0.5, 0.5, 0.0)), "schedule"),
        (dict(teacher="self", mask_patch_size=6), "mask_patch_size"),
    ],
)
def test_settings_errors_name_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SimMIMMaskSettings(**{"image_size": 32, "mask_patch_size": 8, "model_patch_size": 4, **kwargs})


def test_block_and_head_checked_against_the_teacher():
    settings = SimMIMMaskSettings(image_size=32, mask_patch_size=8, model_patch_size=4, teacher="self", layer=5)
    with pytest.raises(ValueError, match="gpa_layer"):
        SimMIMMasker(settings, vit_student(), num_channels=1)


def smooth_images(size):
    """A fixed batch with structure a few steps can learn: bilinear upsampling of 4x4 noise."""
    coarse = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def fit_fixed_batch(student, masker, pixel_values, steps=40):
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3)
    losses = []
    for step in range(steps):
        masked = masker(pixel_values, step / (steps - 1), student, generator=torch.Generator().manual_seed(0))
        loss = student(pixel_values, bool_masked_pos=masked).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_loss_falls_on_a_fixed_batch_vit_self_teacher():
    student = vit_student()
    masker = SimMIMMasker(
        SimMIMMaskSettings(image_size=32, mask_patch_size=8, model_patch_size=4, teacher="self"), student, 1
    )
    losses = fit_fixed_batch(student, masker, smooth_images(32))
    assert losses[-1] < 0.7 * losses[0]


def test_loss_falls_on_a_fixed_batch_swin_pretrained_teacher(mae_teacher_dir):
    student = swin_student()
    settings = SimMIMMaskSettings(
        image_size=64, mask_patch_size=8, model_patch_size=4, teacher_name_or_path=mae_teacher_dir
    )
    masker = SimMIMMasker(settings, student, 1)
    losses = fit_fixed_batch(student, masker, smooth_images(64))
    assert losses[-1] < 0.7 * losses[0]


def test_teacher_channels_must_match_the_students(mae_teacher_dir):
    settings = SimMIMMaskSettings(
        image_size=64, mask_patch_size=16, model_patch_size=4, teacher_name_or_path=mae_teacher_dir
    )
    with pytest.raises(ValueError, match="channel images but the student takes 3"):
        SimMIMMasker(settings, swin_student(), num_channels=3)
