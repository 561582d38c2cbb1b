"""The mask strategy's command-line flags, shared by ``run_pretrain.py`` and ``run_mim.py``, generated from the config.

Every flag is a ``GPAConfig`` field of the same name, with the field's type; unset (``None``) keeps the config's or
checkpoint's value, and a new config takes ``GPAConfig``'s default. The help texts are the one thing written here.
"""

import dataclasses
import typing

from ..configuration_gpa import (
    GPA_LOSS_PATCHES,
    GPA_QUERIES,
    GPA_SCORES,
    GPA_TARGET_NORMS,
    GPA_TEACHERS,
    MASK_METHODS,
    GPAConfig,
)
from ..presets import GPA_PRESETS
from .arguments import parse_head

# (field, help, choices): the GPAConfig fields a command line may set.
MASKING_FLAGS = (
    (
        "mask_method",
        "How patches are masked: 'gpa' (Eq. 6 on the teacher's global patch-wise attention), 'cls_attention' (Eq. 6 "
        "on its CLS-to-patch attention, AttMask's score), 'hpm' (HPM: the patches an EMA copy predicts the largest "
        "losses for), 'block' (BEiT's rectangles) or 'random' (MAE).",
        MASK_METHODS,
    ),
    (
        "gpa_teacher",
        "Who scores the patches: 'self' (the student encoder), 'ema' (its momentum copy) or 'pretrained' (a frozen "
        "ViT/ViTMAE from --gpa_teacher_name_or_path, implied when that flag is given).",
        GPA_TEACHERS,
    ),
    (
        "gpa_teacher_name_or_path",
        "ViTMAE, ViT or GPA checkpoint of the 'pretrained' teacher (directory or Hub id).",
        None,
    ),
    ("gpa_ema_momentum", "Momentum of the 'ema' teacher per optimizer step.", None),
    ("gpa_layer", "Teacher block whose attention scores the patches; negative counts from the end.", None),
    ("gpa_head", "Head of that block (negative counts from the end), or 'none'/'all' for all heads.", None),
    ("gpa_score", "'logits': pre-softmax q.k/sqrt(d) (released code); 'softmax': attention probabilities.", GPA_SCORES),
    (
        "gpa_queries",
        "'all': every query (released code); 'others': the other patches (paper's Eq. 5); 'cls': the CLS row "
        "(--mask_method cls_attention, which sets it).",
        GPA_QUERIES,
    ),
    ("hard_ratio_start", "Share of the masked patches chosen as the top-scored at the start (Eq. 6).", None),
    ("hard_ratio_end", "Share of the masked patches chosen as the top-scored at the end.", None),
    ("soft_ratio_start", "Share sampled in proportion to the score at the start.", None),
    ("soft_ratio_end", "Share sampled in proportion to the score at the end.", None),
    ("gpa_prediction", "Masked Attention Modeling: also regress the z-scored score of the masked patches.", None),
    ("gpa_loss_weight", "loss = pixel_loss + gpa_loss_weight * gpa_loss.", None),
    (
        "gpa_loss_patches",
        "Patches the MAM loss averages over: 'masked', 'all' (released) or 'visible'.",
        GPA_LOSS_PATCHES,
    ),
    ("gpa_target_norm", "MAM target z-score: 'population' std, or 'released' (unbiased var + 1e-6).", GPA_TARGET_NORMS),
    ("gpa_decoder_layers", "0: a linear MAM head on the pixel decoder; N > 0: its own N-block decoder.", None),
    ("gpa_decoder_switch", "With a MAM decoder: the progress from which its blocks are used (released: 0.75).", None),
    ("gpa_teacher_image_size", "Cheaper teacher: score the image downscaled to this side and upsample the map.", None),
    ("block_min_patches", "--mask_method block: the smallest rectangle, in patches (BEiT: 16).", None),
    ("block_min_aspect", "--mask_method block: aspect ratios within [min, 1/min] (BEiT: 0.3).", None),
    ("hpm_momentum_start", "--mask_method hpm: EMA momentum at the start (HPM: 0.999).", None),
    ("hpm_momentum_end", "--mask_method hpm: EMA momentum after the ramp (HPM: 0.9999).", None),
    ("hpm_momentum_epochs", "--mask_method hpm: epochs of the momentum ramp (HPM: 100).", None),
    ("hpm_loss_weight", "--mask_method hpm: loss = pixel_loss + hpm_loss_weight * hpm_loss.", None),
    ("hpm_relative", "--mask_method hpm: True, HPM's pairwise ranking loss; False, MSE to standardised losses.", None),
    ("hpm_predictor_layers", "--mask_method hpm: blocks of the loss predictor (default: the decoder's).", None),
)


def _flag_type(name: str) -> type:
    """The flag's type: the config field's, optional; ``gpa_head`` is parsed from text ('none' = all heads)."""
    if name == "gpa_head":
        return str | None
    annotation = GPAConfig.__annotations__[name]
    # configuration_gpa.py postpones its annotations: they are strings of builtin types ("int | None").
    annotation = eval(annotation, {}) if isinstance(annotation, str) else annotation
    base = next(arg for arg in typing.get_args(annotation) or (annotation,) if arg is not type(None))
    return base | None


def _flag(name: str, help_text: str, choices: tuple | None) -> tuple[str, type, dataclasses.Field]:
    default = getattr(GPAConfig, name)
    metadata = {"help": f"{help_text} Unset: the config's or checkpoint's value (new configs: {default!r})."}
    if choices is not None:
        metadata["choices"] = list(choices)
    return name, _flag_type(name), dataclasses.field(default=None, metadata=metadata)


def _preset_flag() -> tuple[str, type, dataclasses.Field]:
    help_text = (
        "Fill the GPA fields with one named setting (explicit flags still win; the checkpoint records the fields, not "
        "the name): 'ours', 'paper', 'released' (the authors' pretraining script), 'released_mam' (their MAM script: "
        "soft held at 0.3, MAM on through its own decoder with the 75% switch); see docs/model.md."
    )
    return (
        "gpa_preset",
        str | None,
        dataclasses.field(default=None, metadata={"help": help_text, "choices": GPA_PRESETS}),
    )


def masking_overrides(self) -> dict:
    """The config fields given on the command line; ``--gpa_teacher_name_or_path`` alone implies 'pretrained' and
    ``--mask_method cls_attention`` the CLS row."""
    overrides = {name: getattr(self, name) for name, _, _ in MASKING_FLAGS if getattr(self, name) is not None}
    if "gpa_head" in overrides:
        overrides["gpa_head"] = parse_head(overrides["gpa_head"])
    if "gpa_teacher_name_or_path" in overrides:
        overrides.setdefault("gpa_teacher", "pretrained")
    if overrides.get("mask_method") == "cls_attention":
        overrides.setdefault("gpa_queries", "cls")
    return overrides


MaskingArguments = dataclasses.make_dataclass(
    "MaskingArguments",
    [_flag(*flag) for flag in MASKING_FLAGS] + [_preset_flag()],
    namespace={"masking_overrides": masking_overrides, "__doc__": __doc__.split("\n\n")[1]},
)

__all__ = ["MASKING_FLAGS", "MaskingArguments", "parse_head"]
