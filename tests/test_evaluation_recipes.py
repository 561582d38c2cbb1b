"""The fine-tuning recipes against MAE's values (main_finetune.py defaults, FINETUNE.md) and the GPA release's."""

import dataclasses

import pytest

from modeling_gpa.evaluation import checkpoint_model_size, cosine_lr, finetune_recipe, resolve_model_size

# facebookresearch/mae: main_finetune.py's defaults with FINETUNE.md's ViT-B/16 command (4 nodes x 8 GPUs x 32).
MAE_VIT_B = {
    "total_batch_size": 1024,
    "base_learning_rate": 5e-4,
    "epochs": 100,
    "warmup_epochs": 5,
    "layer_decay": 0.65,
    "weight_decay": 0.05,
    "min_lr": 1e-6,
    "max_grad_norm": None,
    "drop_path": 0.1,
    "pooling": "avg",
    "head_init_std": 2e-5,
    "train_augment": "timm",
    "crop_scale": (0.08, 1.0),
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "reprob": 0.25,
    "remode": "pixel",
    "recount": 1,
    "mixup": 0.8,
    "cutmix": 1.0,
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "label_smoothing": 0.1,
    "eval_crop_pct": 0.875,
}
# FINETUNE.md: what the ViT-L/16 and ViT-H/14 commands change.
MAE_BY_SIZE = {
    "base": {},
    "large": {"base_learning_rate": 1e-3, "layer_decay": 0.75, "epochs": 50, "drop_path": 0.2},
    "huge": {"base_learning_rate": 1e-3, "layer_decay": 0.75, "epochs": 50, "drop_path": 0.3},
}
# The GPA release: batch 1024, blr 5e-4, layer decay 0.8, drop path 0.1, mixup 0.8, cutmix 1.0, reprob 0.25.
GPA_RELEASED = {**MAE_VIT_B, "layer_decay": 0.8}
# Trainer's defaults, as run_finetune.py trained with no flags before it had recipes.
PLAIN = {
    "total_batch_size": 8,
    "learning_rate": 5e-5,
    "base_learning_rate": None,
    "epochs": 3,
    "layer_decay": 0.75,
    "max_grad_norm": 1.0,
    "min_lr": 0.0,
    "head_init_std": 0.02,
    "pooling": "cls",
    "drop_path": 0.0,
    "train_augment": "pretraining",
    "crop_scale": (0.2, 1.0),
    "mixup": 0.0,
    "cutmix": 0.0,
    "label_smoothing": 0.0,
    "reprob": 0.0,
    "auto_augment": None,
}


def _subset(recipe, keys) -> dict:
    return {key: getattr(recipe, key) for key in keys}


@pytest.mark.parametrize("size", ["base", "large", "huge"])
def test_mae_recipe_is_maes_for_each_model_size(size):
    expected = {**MAE_VIT_B, **MAE_BY_SIZE[size]}
    recipe = finetune_recipe("mae", size)
    assert _subset(recipe, expected) == expected
    assert recipe.learning_rate is None


def test_gpa_released_and_plain_recipes():
    assert _subset(finetune_recipe("gpa_released"), GPA_RELEASED) == GPA_RELEASED
    assert _subset(finetune_recipe("plain"), PLAIN) == PLAIN
    # The release's values differ from MAE's ViT-B recipe in the layer decay only.
    changed = {
        field.name
        for field in dataclasses.fields(finetune_recipe("mae"))
        if getattr(finetune_recipe("mae"), field.name) != getattr(finetune_recipe("gpa_released"), field.name)
    }
    assert changed == {"name", "layer_decay"}


def test_recipe_replace_keeps_unset_values():
    recipe = finetune_recipe("mae").replace(drop_path=0.0, mixup=None)
    assert recipe.drop_path == 0.0 and recipe.mixup == 0.8


def test_bad_recipe_names_are_one_line_errors():
    with pytest.raises(ValueError, match=r"--recipe 'maes' is invalid; allowed values: mae, gpa_released, plain\."):
        finetune_recipe("maes")
    with pytest.raises(ValueError, match="--model_size large applies to --recipe mae"):
        finetune_recipe("gpa_released", "large")
    with pytest.raises(ValueError, match="--model_size 'giant' is invalid"):
        finetune_recipe("mae", "giant")


def test_cosine_lr_warms_up_then_decays_to_min_lr():
    assert cosine_lr(0, 100, 10, 1.0) == 0.0
    assert cosine_lr(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert cosine_lr(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 10, 1.0) == pytest.approx(0.0)
    assert cosine_lr(100, 100, 10, 1.0, min_lr=1e-6) == pytest.approx(1e-6)
    assert cosine_lr(55, 100, 10, 1.0, min_lr=0.2) == pytest.approx(0.6)


@pytest.mark.parametrize(
    "layers, width, size", [(12, 768, "base"), (24, 1024, "large"), (32, 1280, "huge"), (3, 32, None), (12, 1024, None)]
)
def test_the_model_size_is_the_checkpoints_depth_and_width(layers, width, size):
    from transformers import ViTMAEConfig

    assert checkpoint_model_size(ViTMAEConfig(num_hidden_layers=layers, hidden_size=width)) == size


def test_model_size_defaults_to_the_checkpoints_refuses_a_mismatch_and_logs_other_shapes(caplog):
    from transformers import SwinConfig, ViTConfig

    large = ViTConfig(num_hidden_layers=24, hidden_size=1024)
    assert resolve_model_size(None, large, "mae", "vitl") == "large"
    assert resolve_model_size("large", large, "mae", "vitl") == "large"
    assert resolve_model_size(None, large, "gpa_released", "vitl") == "base"  # one set of values
    with pytest.raises(ValueError) as mismatch:
        resolve_model_size("base", large, "mae", "vitl")
    assert str(mismatch.value) == (
        "--model_size base does not match vitl, a ViT-L (24 blocks of 1024): drop --model_size or pass --model_size "
        "large."
    )
    with caplog.at_level("WARNING"):
        assert resolve_model_size(None, SwinConfig(), "mae", "swin") == "base"
    assert "swin is neither ViT-B, ViT-L nor ViT-H: fine-tuning with MAE's ViT-B values" in caplog.text
    assert resolve_model_size("huge", ViTConfig(num_hidden_layers=3, hidden_size=32), "mae", "tiny") == "huge"
    with pytest.raises(ValueError, match="--model_size 'giant' is invalid"):
        resolve_model_size("giant", large, "mae", "vitl")
