import pytest
import torch
from tiny import tiny_kwargs
from transformers import ViTForImageClassification

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.configuration_gpa import MASK_METHODS
from modeling_gpa.masking import mask_counts

STRATEGY_FIELDS = {
    "random": dict(gpa_prediction=False),
    "block": dict(gpa_prediction=False),
    "gpa": dict(),
    "cls_attention": dict(gpa_queries="cls", gpa_score="softmax", gpa_head=None),
    "hpm": dict(gpa_prediction=False, gpa_teacher="ema", soft_ratio_start=0.0, soft_ratio_end=0.0),
}


def strategy_model(method: str) -> GPAForPreTraining:
    torch.manual_seed(0)
    return GPAForPreTraining(GPAConfig(**tiny_kwargs(mask_method=method, **STRATEGY_FIELDS[method]))).eval()


def test_every_strategy_is_covered():
    assert set(STRATEGY_FIELDS) == set(MASK_METHODS)


@pytest.mark.parametrize("method", MASK_METHODS)
def test_every_strategy_masks_mae_count_at_every_progress_and_scored_ones_take_their_top_patches(method):
    model = strategy_model(method)
    pixel_values = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    score = model.mask_score(pixel_values)
    for progress in (0.0, 0.3, 1.0):
        torch.manual_seed(1)
        output = model(pixel_values, mask_progress=progress)
        assert (output.mask.sum(1) == 37).all()
        num_hard = mask_counts(49, 0.75, progress, model.mask_schedule)[0]
        if score is None:
            assert num_hard == 0
            continue
        top = score.topk(num_hard, dim=1).indices
        assert (output.mask.gather(1, top) == 1).all()
    if method == "hpm":
        torch.testing.assert_close(score, model.teacher_predicted_losses(pixel_values))


def test_cls_attention_and_gpa_share_the_teacher_and_differ_in_the_score_only():
    gpa, cls = strategy_model("gpa"), strategy_model("cls_attention")
    pixel_values = torch.randn(2, 1, 28, 28)
    assert torch.equal(gpa.vit.layers[0].attention.q_proj.weight, cls.vit.layers[0].attention.q_proj.weight)
    assert not torch.allclose(gpa.mask_score(pixel_values), cls.mask_score(pixel_values))


def test_hpm_trains_its_predictor_and_its_ema_copy_follows_the_momentum_schedule():
    model = strategy_model("hpm").train()
    output = model(torch.randn(4, 1, 28, 28), mask_progress=0.5)
    torch.testing.assert_close(output.loss, output.pixel_loss + output.hpm_loss)
    output.loss.backward()
    assert model.loss_predictor.pred.weight.grad.abs().sum() > 0
    before = model.teacher_loss_predictor.pred.weight.clone()
    with torch.no_grad():
        model.loss_predictor.pred.weight.add_(1.0)
    assert model.update_teacher(epoch=0) == 0.999 and model.update_teacher(epoch=150) == 0.9999
    moved = model.teacher_loss_predictor.pred.weight - before
    # teacher + 0.001 after the first step, then 0.9999 of that plus 0.0001 of the student's +1.
    torch.testing.assert_close(moved, torch.full_like(moved, 0.001 * 0.9999 + 0.0001), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "fields, name",
    [
        (dict(mask_method="hpm", gpa_prediction=False), "gpa_teacher"),
        (dict(mask_method="block"), "gpa_prediction"),
        (dict(mask_method="cls_attention"), "gpa_queries"),
        (dict(mask_method="gpa", gpa_queries="cls"), "gpa_queries"),
        (dict(mask_method="grid"), "mask_method"),
        (dict(gpa_decoder_switch=0.75), "gpa_decoder_switch"),
        (dict(mask_method="block", gpa_prediction=False, block_min_aspect=2.0), "block_min_aspect"),
    ],
)
def test_invalid_combinations_fail_at_construction_naming_the_field(fields, name):
    with pytest.raises(ValueError, match=f"GPAConfig.{name}="):
        GPAConfig(**tiny_kwargs(**fields))


def test_an_hpm_checkpoint_loads_as_a_vit_classifier_with_its_encoder(tmp_path):
    model = strategy_model("hpm")
    model.save_pretrained(tmp_path)
    classifier = ViTForImageClassification.from_pretrained(tmp_path, num_labels=3)
    for name, tensor in model.vit.layers[0].state_dict().items():
        torch.testing.assert_close(classifier.vit.layers[0].state_dict()[name], tensor, msg=name)
