"""The fine-tuning recipes run_finetune.py resolves (MAE's, the GPA release's, Trainer's plain defaults), and MAE's
cosine schedule.

The values are MAE's (facebookresearch/mae ``main_finetune.py`` defaults and ``FINETUNE.md``'s commands): total
batch 1024, AdamW with layer-wise lr decay, weight decay 0.05, 5 warm-up epochs then a half-cycle cosine to min lr
1e-6, no gradient clipping, drop path, timm's ``create_transform`` (RandomResizedCrop 0.08-1 bicubic, flip,
RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25 in pixel mode), mixup 0.8 / CutMix 1.0 with label smoothing
0.1, average pooling of the patch tokens into a new ``fc_norm``, a head drawn from trunc_normal(std=2e-5), and the
evaluation crop at 224/256. What is done with them lives in timm: ``timm.data.create_transform``,
``timm.data.Mixup``, ``timm.loss.SoftTargetCrossEntropy``, ``timm.optim.param_groups_layer_decay`` and
``timm.models.VisionTransformer``'s drop path and pooling.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

RECIPES = ("mae", "gpa_released", "plain")
logger = logging.getLogger(__name__)

MODEL_SIZES = ("base", "large", "huge")
# The encoders MAE's sizes name: (blocks, width) of ViT-B, ViT-L and ViT-H.
VIT_SHAPES = {(12, 768): "base", (24, 1024): "large", (32, 1280): "huge"}
VIT_NAMES = {"base": "ViT-B", "large": "ViT-L", "huge": "ViT-H"}
MAE_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"


@dataclass(frozen=True)
class FinetuneRecipe:
    """Every setting of an end-to-end fine-tuning run that a recipe fixes (flags of run_finetune.py override each).

    ``base_learning_rate`` is per 256 images (lr = blr * total batch / 256); ``learning_rate`` an absolute rate used
    when ``base_learning_rate`` is None. ``warmup_epochs`` may be fractional.
    ``train_augment`` is ``"timm"`` (``create_transform`` with the fields below) or ``"pretraining"`` (the pretraining
    crop, scale 0.2-1, and flip); ``eval_crop_pct`` is timm's crop share (None: the pretraining pipeline's eval crop).
    """

    name: str
    total_batch_size: int
    base_learning_rate: float | None
    learning_rate: float | None
    epochs: int
    warmup_epochs: float
    layer_decay: float
    weight_decay: float
    min_lr: float
    max_grad_norm: float | None
    drop_path: float
    pooling: str
    head_init_std: float
    train_augment: str
    crop_scale: tuple[float, float]
    auto_augment: str | None
    reprob: float
    remode: str
    recount: int
    mixup: float
    cutmix: float
    mixup_prob: float
    mixup_switch_prob: float
    label_smoothing: float
    eval_crop_pct: float | None

    def replace(self, **changes) -> FinetuneRecipe:
        """A copy with ``changes`` (the flags given on the command line); ``None`` values are ignored."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})


MAE_BASE = FinetuneRecipe(
    name="mae",
    total_batch_size=1024,
    base_learning_rate=5e-4,
    learning_rate=None,
    epochs=100,
    warmup_epochs=5,
    layer_decay=0.65,
    weight_decay=0.05,
    min_lr=1e-6,
    max_grad_norm=None,
    drop_path=0.1,
    pooling="avg",
    head_init_std=2e-5,
    train_augment="timm",
    crop_scale=(0.08, 1.0),
    auto_augment=MAE_RAND_AUGMENT,
    reprob=0.25,
    remode="pixel",
    recount=1,
    mixup=0.8,
    cutmix=1.0,
    mixup_prob=1.0,
    mixup_switch_prob=0.5,
    label_smoothing=0.1,
    eval_crop_pct=224 / 256,
)
# FINETUNE.md's ViT-L/16 and ViT-H/14 commands: blr 1e-3, layer decay 0.75, 50 epochs, drop path 0.2 / 0.3.
MAE_BY_SIZE = {
    "base": MAE_BASE,
    "large": MAE_BASE.replace(base_learning_rate=1e-3, layer_decay=0.75, epochs=50, drop_path=0.2),
    "huge": MAE_BASE.replace(base_learning_rate=1e-3, layer_decay=0.75, epochs=50, drop_path=0.3),
}
# The fine-tuning command of the GPA release's README: MAE's recipe for ViT-B/16 with layer decay 0.8 (2 GPUs x 128 x
# 4 accumulation steps: batch 1024, as MAE's).
GPA_RELEASED = MAE_BASE.replace(name="gpa_released", layer_decay=0.8)
# Trainer's defaults with the pretraining crop: what run_finetune.py gives without a recipe.
PLAIN = FinetuneRecipe(
    name="plain",
    total_batch_size=8,
    base_learning_rate=None,
    learning_rate=5e-5,
    epochs=3,
    warmup_epochs=0.15,  # 5% of the 3 epochs
    layer_decay=0.75,
    weight_decay=0.05,
    min_lr=0.0,
    max_grad_norm=1.0,
    drop_path=0.0,
    pooling="cls",
    head_init_std=0.02,
    train_augment="pretraining",
    crop_scale=(0.2, 1.0),
    auto_augment=None,
    reprob=0.0,
    remode="pixel",
    recount=1,
    mixup=0.0,
    cutmix=0.0,
    mixup_prob=1.0,
    mixup_switch_prob=0.5,
    label_smoothing=0.0,
    eval_crop_pct=None,
)


def finetune_recipe(name: str = "mae", model_size: str = "base") -> FinetuneRecipe:
    """The recipe ``name`` ("mae", "gpa_released" or "plain"); ``model_size`` picks MAE's ViT-B/L/H values."""
    if name not in RECIPES:
        raise ValueError(f"--recipe {name!r} is invalid; allowed values: {', '.join(RECIPES)}.")
    if model_size not in MODEL_SIZES:
        raise ValueError(f"--model_size {model_size!r} is invalid; allowed values: {', '.join(MODEL_SIZES)}.")
    if name == "mae":
        return MAE_BY_SIZE[model_size]
    if model_size != "base":
        raise ValueError(f"--recipe {name} has one set of values; --model_size {model_size} applies to --recipe mae.")
    return GPA_RELEASED if name == "gpa_released" else PLAIN


def checkpoint_model_size(config) -> str | None:
    """"base", "large" or "huge" when the checkpoint's encoder has ViT-B/L/H's depth and width, else None (Swin,
    tiny or other shapes)."""
    if getattr(config, "depths", None) is not None:  # Swin: stages, not one stack of blocks
        return None
    return VIT_SHAPES.get((getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)))


def resolve_model_size(given: str | None, config, recipe: str, checkpoint: str) -> str:
    """``--model_size``: the size the checkpoint's depth and width say when not given; a given one that contradicts
    them raises (one line); any other shape gets "base" with a log line saying so."""
    if given is not None and given not in MODEL_SIZES:
        raise ValueError(f"--model_size {given!r} is invalid; allowed values: {', '.join(MODEL_SIZES)}.")
    found = checkpoint_model_size(config)
    if given is not None and found is not None and given != found:
        raise ValueError(
            f"--model_size {given} does not match {checkpoint}, a {VIT_NAMES[found]} ({config.num_hidden_layers} "
            f"blocks of {config.hidden_size}): drop --model_size or pass --model_size {found}."
        )
    if given is not None or recipe != "mae":
        return given or "base"
    if found is None:
        logger.warning(
            f"{checkpoint} is neither ViT-B, ViT-L nor ViT-H: fine-tuning with MAE's ViT-B values (layer decay, drop "
            "path, batch, epochs); pass --model_size large or huge for another size's."
        )
        return "base"
    logger.info(f"{checkpoint} is a {VIT_NAMES[found]}: MAE's --model_size {found} values.")
    return found


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then a half-cycle cosine to ``min_lr`` (MAE's schedule)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
