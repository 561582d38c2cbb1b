import dataclasses

import pytest
import torch
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.evaluation.segmentation import (
    SEGMENTATION_RECIPES,
    evaluate_segmentation,
    poly_schedule,
    segmentation_param_groups,
    slide_inference,
    upernet_for_segmentation,
    window_starts,
)

RECIPE = dataclasses.replace(SEGMENTATION_RECIPES["mae"], decode_channels=16, auxiliary_channels=8, crop_size=16)
ID2LABEL = {0: "background", 1: "thing", 2: "other"}


@pytest.fixture(scope="module")
def upernet(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("gpa")
    GPAForPreTraining(GPAConfig(**tiny_kwargs(num_channels=3, num_hidden_layers=4))).save_pretrained(directory)
    return upernet_for_segmentation(str(directory), ID2LABEL, RECIPE).eval(), directory


def test_mae_recipe_is_mmsegmentations_and_the_encoder_loads(upernet):
    recipe = SEGMENTATION_RECIPES["mae"]
    assert (recipe.learning_rate, recipe.weight_decay, recipe.layer_decay, recipe.drop_path) == (1e-4, 0.05, 0.65, 0.1)
    assert (recipe.warmup_steps, recipe.max_steps, recipe.total_batch_size, recipe.crop_size) == (
        1500,
        160_000,
        16,
        512,
    )
    assert (recipe.stride, recipe.ratio_range, recipe.auxiliary_loss_weight) == (341, (0.5, 2.0), 0.4)
    model, directory = upernet
    backbone = model.config.backbone_config
    assert backbone.add_fpn and backbone.out_indices == [1, 2, 3, 4] and backbone.drop_path_rate == 0.1
    checkpoint = GPAForPreTraining.from_pretrained(directory).vit.state_dict()
    for name, tensor in model.backbone.vit.state_dict().items():
        assert torch.equal(tensor, checkpoint[name]), name


def test_layer_decay_groups_and_poly_schedule(upernet):
    model, _ = upernet
    groups = segmentation_param_groups(model, RECIPE, 1e-4)
    scale_of = {id(p): group["lr_scale"] for group in groups for p in group["params"]}
    decay_of = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    parameters = dict(model.named_parameters())
    assert scale_of[id(parameters["backbone.vit.embeddings.patch_embeddings.projection.weight"])] == 0.65**5
    assert scale_of[id(parameters["backbone.vit.layers.3.mlp.fc1.weight"])] == pytest.approx(0.65)
    assert scale_of[id(parameters["decode_head.classifier.weight"])] == 1.0
    assert scale_of[id(parameters["backbone.fpn.fpn2.weight"])] == 1.0
    assert decay_of[id(parameters["backbone.vit.embeddings.position_embeddings"])] == 0.0
    assert decay_of[id(parameters["backbone.vit.layers.0.attention.q_proj.weight"])] == 0.05
    optimizer = torch.optim.AdamW(groups, lr=1e-4)
    schedule = poly_schedule(optimizer, RECIPE, max_steps=100, warmup_steps=10)
    factors = []
    for _ in range(100):
        factors.append(schedule.get_last_lr()[-1] / 1e-4)
        optimizer.step()
        schedule.step()
    assert factors[0] == pytest.approx(1e-6) and factors[5] == pytest.approx(0.95 * (0.5 + 0.5e-6))
    assert factors[10] == pytest.approx(0.9) and factors[99] == pytest.approx(0.01)


def test_slide_inference_averages_mmsegmentations_windows(upernet):
    model, _ = upernet
    assert window_starts(683, 512, 341) == [0, 171] and window_starts(512, 512, 341) == [0]
    assert window_starts(1200, 512, 341) == [0, 341, 682, 688] and window_starts(300, 512, 341) == [0]
    pixel_values = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = slide_inference(model, pixel_values, crop=16, stride=8)
        left, right = model(pixel_values[..., :16]).logits, model(pixel_values[..., 8:]).logits
    assert logits.shape == (2, 3, 16, 24)
    torch.testing.assert_close(logits[..., :8], left[..., :8])
    torch.testing.assert_close(logits[..., 8:16], (left[..., 8:] + right[..., :8]) / 2)
    torch.testing.assert_close(logits[..., 16:], right[..., 8:])
    with torch.no_grad():
        # A 14-pixel side below the crop: one window, padded to the patch size's next multiple.
        whole = slide_inference(model, pixel_values[..., :14, :14], crop=16, stride=8)
        padded = model(torch.nn.functional.pad(pixel_values[..., :14, :14], (0, 2, 0, 2))).logits[..., :14, :14]
    torch.testing.assert_close(whole, padded)


def test_evaluate_segmentation_scores_the_argmax_against_labels(upernet):
    model, _ = upernet
    pixel_values = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predictions = model(pixel_values).logits.argmax(1)
    labels = predictions.clone()
    labels[:2] = 255
    labels[3, :8] = (predictions[3, :8] + 1) % 3
    batches = [{"pixel_values": pixel_values[i : i + 2], "labels": labels[i : i + 2]} for i in (0, 2)]
    result = evaluate_segmentation(model, batches, num_labels=3, crop=16, stride=8)
    assert result["overall_accuracy"] == pytest.approx(384 / 512)
    assert len(result["per_category_iou"]) == 3 and 0.0 < result["mean_iou"] < 1.0
