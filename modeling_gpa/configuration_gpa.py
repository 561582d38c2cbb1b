"""Configuration of GPA pretraining: a ViTMAE configuration plus the fields of the method."""

from __future__ import annotations

import math

from transformers import ViTMAEConfig
from transformers.backbone_utils import BackboneConfigMixin

# Every mask strategy and where its generator lives (the list a reader opens: ``mask_strategies``).
MASK_METHODS = ("gpa", "cls_attention", "hpm", "block", "random")
# Strategies whose score a teacher's attention gives: only they can regress it (MAM).
ATTENTION_SCORED = ("gpa", "cls_attention")
GPA_TEACHERS = ("self", "ema", "pretrained")
GPA_SCORES = ("logits", "softmax")
GPA_QUERIES = ("all", "others", "cls")
GPA_LOSS_PATCHES = ("masked", "all", "visible")
GPA_TARGET_NORMS = ("population", "released")


def _require_choice(field: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"GPAConfig.{field}={value!r} is invalid; allowed values: {', '.join(map(repr, allowed))}.")


def _require_fraction(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"GPAConfig.{field}={value!r} is invalid; allowed values: a number in [0, 1].")


def _require_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"GPAConfig.{field}={value!r} is invalid; allowed values: True, False.")


def _require_weight(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"GPAConfig.{field}={value!r} is invalid; allowed values: a finite number >= 0.")


def _require_count(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"GPAConfig.{field}={value!r} is invalid; allowed values: an integer >= {minimum}.")


def pair(size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """An image or patch size as (height, width): an int stands for a square."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resolve_index(field: str, index: int, size: int, what: str) -> int:
    """Turns a possibly negative index into ``0 <= index < size`` or raises naming ``field``."""
    if isinstance(index, bool) or not isinstance(index, int) or not -size <= index < size:
        raise ValueError(
            f"GPAConfig.{field}={index!r} is out of range; allowed values: an integer in [{-size}, {size - 1}] "
            f"(the model has {size} {what})."
        )
    return index % size


def default_out_indices(num_layers: int) -> list[int]:
    """BEiT/MAE's four feature stages for the dense-task neck: blocks 4, 6, 8, 12 of a 12-block ViT, the same depth
    fractions elsewhere (8, 12, 16, 24 of ViT-L); the last block alone when the encoder has fewer than 4 blocks."""
    if num_layers < 4:
        return [num_layers]
    return [int(num_layers * share / 12 + 0.5) for share in (4, 6, 8, 12)]


class GPAConfig(BackboneConfigMixin, ViTMAEConfig):
    r"""Configuration of [`GPAForPreTraining`]: every [`ViTMAEConfig`] field plus the GPA method's.

    Args:
        mask_method (`str`, *optional*, defaults to `"gpa"`):
            How the masked patches are chosen (see `modeling_gpa.mask_strategies`): `"gpa"` (Eq. 6 on the teacher's
            global patch-wise attention), `"cls_attention"` (Eq. 6 on the teacher's CLS-to-patch attention, AttMask's
            score; needs `gpa_queries="cls"`), `"hpm"` (HPM: Eq. 6's hard share on the losses an EMA copy of the
            model predicts; needs `gpa_teacher="ema"`), `"block"` (BEiT's rectangles) or `"random"` (MAE).
        gpa_teacher (`str`, *optional*, defaults to `"self"`):
            Which network scores the patches: `"self"` (the student encoder under `no_grad`), `"ema"` (a momentum
            copy of the student encoder) or `"pretrained"` (a frozen ViT or ViTMAE loaded from
            `gpa_teacher_name_or_path`, the paper's setting).
        gpa_teacher_name_or_path (`str`, *optional*):
            Local directory or Hub id of the pretrained teacher; required when `gpa_teacher="pretrained"`.
        gpa_ema_momentum (`float`, *optional*, defaults to 0.999):
            Momentum of the `"ema"` teacher: `teacher = m * teacher + (1 - m) * student` after each optimizer step.
        gpa_layer (`int`, *optional*, defaults to -1):
            Teacher block whose attention gives the score; negative values count from the end.
        gpa_head (`int` or `None`, *optional*, defaults to -1):
            Head of that block; negative values count from the end; `None` sums over all heads.
        gpa_score (`str`, *optional*, defaults to `"logits"`):
            `"logits"`: pre-softmax `q . k / sqrt(d)` (released code); `"softmax"`: attention probabilities.
        gpa_queries (`str`, *optional*, defaults to `"all"`):
            `"all"`: every query, CLS and the patch itself included (released code); `"others"`: the other patches
            only (the paper's Eq. 5); `"cls"`: the CLS query's row alone, mean over heads when `gpa_head=None`
            (`mask_method="cls_attention"`, AttMask's score with `gpa_score="softmax"`).
        hard_ratio_start, hard_ratio_end, soft_ratio_start, soft_ratio_end (`float`):
            Fractions of the masked patches chosen by top GPA (hard) and by GPA-weighted sampling (soft), linearly
            interpolated over training (Eq. 6); the rest is random.
        gpa_prediction (`bool`, *optional*, defaults to `True`):
            Adds Masked Attention Modeling: a head regresses the z-scored GPA of each masked patch.
        gpa_loss_weight (`float`, *optional*, defaults to 1.0):
            `loss = pixel_loss + gpa_loss_weight * gpa_loss`.
        gpa_loss_patches (`str`, *optional*, defaults to `"masked"`):
            Patches the MAM loss averages over: `"masked"` (like MAE's pixel loss), `"all"` (the released code) or
            `"visible"` (the literal reading of the paper's Eq. 7, `sum_i (1 - M_i) (...)^2` with `M_i = 1` on
            masked patches).
        gpa_target_norm (`str`, *optional*, defaults to `"population"`):
            Per-image z-score of the MAM target: `"population"`: `(x - mean) / max(std, 1e-6)` with the population
            standard deviation; `"released"`: `(x - mean) / sqrt(var + 1e-6)` with the unbiased variance, as the
            released code.
        gpa_decoder_layers (`int`, *optional*, defaults to 0):
            0: one linear layer on the RGB decoder's output; N > 0: an N-layer decoder stack of its own.
        gpa_teacher_image_size (`int`, *optional*):
            Cheaper teacher: it scores the image resized (area) to this side, a multiple of `patch_size` smaller than
            `image_size`, and its map is upsampled (bilinear) to the student's patch grid. Half the resolution gives
            the teacher 4x fewer tokens. `None` (default): the teacher sees the student's image.
        gpa_decoder_switch (`float`, *optional*):
            The released MAM head's switch, with `gpa_decoder_layers > 0`: before this training progress the MAM
            decoder predicts from its input tokens directly (its blocks skipped), from then on through its blocks.
            `None` (default): through its blocks for the whole run.
        block_min_patches (`int`, *optional*, defaults to 16), block_min_aspect (`float`, *optional*, defaults to 0.3):
            `mask_method="block"`: the smallest rectangle BEiT adds and the aspect range `[min, 1 / min]`.
        hpm_momentum_start, hpm_momentum_end (`float`, *optional*, defaults to 0.999 and 0.9999), hpm_momentum_epochs
        (`int`, *optional*, defaults to 100):
            `mask_method="hpm"`: the EMA copy's momentum rises linearly from start to end over the first
            `hpm_momentum_epochs` epochs, then stays at end (HPM's `engine_pretrain.py`).
        hpm_loss_weight (`float`, *optional*, defaults to 1.0):
            `loss = pixel_loss + hpm_loss_weight * hpm_loss`.
        hpm_relative (`bool`, *optional*, defaults to `True`):
            HPM's loss-prediction term: `True`, binary cross-entropy of `sigmoid(p_i - p_j)` against
            `1[l_i > l_j]` over the pairs of masked patches; `False`, MSE to the per-image standardised losses.
        hpm_predictor_layers (`int`, *optional*):
            Blocks of the loss predictor; `None`: as many as the pixel decoder (HPM's).
        gpa_teacher_config (`dict`, *optional*):
            Filled in when a `"pretrained"` teacher is loaded: its config, so the checkpoint (which stores the
            teacher's weights) can be loaded where `gpa_teacher_name_or_path` does not exist.
        out_features, out_indices (`list`, *optional*):
            [`GPABackbone`]'s feature stages, as in `BeitConfig`: names in `stage_names` (`stem`, the patch embeddings,
            then `stage1..stageN`, the blocks) or their indices. Default: [`default_out_indices`] (4, 6, 8, 12 for
            ViT-B, as MAE's and BEiT's segmentation recipes).
        add_fpn (`bool`, *optional*, defaults to `False`):
            [`GPABackbone`] adds BEiT/MAE's four-scale neck (4x, 2x, 1x, 1/2x of the patch grid); needs 4 stages.
        drop_path_rate (`float`, *optional*, defaults to 0.0):
            [`GPABackbone`]'s stochastic depth, rising linearly from 0 at the first block to this at the last.
    """

    model_type = "gpa"

    mask_method: str = "gpa"
    gpa_teacher: str = "self"
    gpa_teacher_name_or_path: str | None = None
    gpa_ema_momentum: float = 0.999
    gpa_layer: int = -1
    gpa_head: int | None = -1
    gpa_score: str = "logits"
    gpa_queries: str = "all"
    hard_ratio_start: float = 0.0
    hard_ratio_end: float = 0.5
    soft_ratio_start: float = 0.5
    soft_ratio_end: float = 0.0
    gpa_prediction: bool = True
    gpa_loss_weight: float = 1.0
    gpa_loss_patches: str = "masked"
    gpa_target_norm: str = "population"
    gpa_decoder_layers: int = 0
    gpa_teacher_image_size: int | None = None
    gpa_decoder_switch: float | None = None
    block_min_patches: int = 16
    block_min_aspect: float = 0.3
    hpm_momentum_start: float = 0.999
    hpm_momentum_end: float = 0.9999
    hpm_momentum_epochs: int = 100
    hpm_loss_weight: float = 1.0
    hpm_relative: bool = True
    hpm_predictor_layers: int | None = None
    gpa_teacher_config: dict | None = None
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    add_fpn: bool = False
    drop_path_rate: float | int = 0.0

    def __post_init__(self, **kwargs):
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, self.num_hidden_layers + 1)]
        out_indices, out_features = kwargs.pop("out_indices", None), kwargs.pop("out_features", None)
        if out_indices is None and out_features is None:
            out_indices = default_out_indices(self.num_hidden_layers)
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        super().__post_init__(**kwargs)
        self.validate_gpa()

    def __setattr__(self, key, value):
        # A depth set after construction (--config_overrides, `config.num_hidden_layers = 6`) must carry the backbone
        # stages with it, or the next save fails on stage names the encoder no longer has. Explicit out indices stay
        # as given: when they no longer fit, the check names them.
        old_default = None
        if key == "num_hidden_layers" and "stage_names" in self.__dict__:
            old_default = default_out_indices(self.num_hidden_layers)
        super().__setattr__(key, value)
        if old_default is not None:
            self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, value + 1)]
            if list(self._out_indices or []) == old_default:
                self.set_output_features_output_indices(out_features=None, out_indices=default_out_indices(value))

    def validate_gpa(self) -> None:
        """Raises ``ValueError`` naming the first invalid GPA field and its allowed values."""
        _require_choice("mask_method", self.mask_method, MASK_METHODS)
        _require_choice("gpa_teacher", self.gpa_teacher, GPA_TEACHERS)
        if self.gpa_teacher == "pretrained" and not self.gpa_teacher_name_or_path:
            raise ValueError(
                "GPAConfig.gpa_teacher_name_or_path is required when gpa_teacher='pretrained'; "
                "allowed values: a local directory or Hub id of a ViTMAE or ViT checkpoint."
            )
        _require_fraction("gpa_ema_momentum", self.gpa_ema_momentum)
        _require_choice("gpa_score", self.gpa_score, GPA_SCORES)
        _require_choice("gpa_queries", self.gpa_queries, GPA_QUERIES)
        for field in ("hard_ratio_start", "hard_ratio_end", "soft_ratio_start", "soft_ratio_end"):
            _require_fraction(field, getattr(self, field))
        for stage in ("start", "end"):
            total = getattr(self, f"hard_ratio_{stage}") + getattr(self, f"soft_ratio_{stage}")
            if total > 1.0 + 1e-9:
                raise ValueError(
                    f"GPAConfig.hard_ratio_{stage} + soft_ratio_{stage} = {total} is invalid; "
                    "allowed values: fractions summing to at most 1."
                )
        self._validate_mask_ratio()
        _require_bool("gpa_prediction", self.gpa_prediction)
        _require_weight("gpa_loss_weight", self.gpa_loss_weight)
        _require_choice("gpa_loss_patches", self.gpa_loss_patches, GPA_LOSS_PATCHES)
        _require_choice("gpa_target_norm", self.gpa_target_norm, GPA_TARGET_NORMS)
        _require_count("gpa_decoder_layers", self.gpa_decoder_layers, 0)
        if self.gpa_decoder_switch is not None:
            _require_fraction("gpa_decoder_switch", self.gpa_decoder_switch)
            if not self.gpa_prediction or self.gpa_decoder_layers == 0:
                raise ValueError(
                    f"GPAConfig.gpa_decoder_switch={self.gpa_decoder_switch!r} is invalid without a MAM decoder; "
                    "allowed values: None, or a fraction with gpa_prediction=True and gpa_decoder_layers > 0."
                )
        self._validate_teacher_image_size()
        self._validate_backbone()
        self._validate_mask_method()
        if self.gpa_teacher != "pretrained":
            self.resolved_gpa_layer(self.num_hidden_layers)
            self.resolved_gpa_head(self.num_attention_heads)

    def _validate_mask_method(self) -> None:
        """The combinations a strategy needs: its score's queries, its teacher, MAM only on attention scores."""
        method = self.mask_method
        if (method == "cls_attention") != (self.gpa_queries == "cls"):
            allowed = "'cls'" if method == "cls_attention" else "'all', 'others' (or mask_method='cls_attention')"
            raise ValueError(
                f"GPAConfig.gpa_queries={self.gpa_queries!r} is invalid with mask_method={method!r}; allowed values: "
                f"{allowed}."
            )
        if self.gpa_prediction and method not in ATTENTION_SCORED:
            raise ValueError(
                f"GPAConfig.gpa_prediction=True is invalid with mask_method={method!r}: Masked Attention Modeling "
                f"regresses an attention score, which only {', '.join(map(repr, ATTENTION_SCORED))} compute; "
                "allowed values: False."
            )
        if method == "hpm" and self.gpa_teacher != "ema":
            raise ValueError(
                f"GPAConfig.gpa_teacher={self.gpa_teacher!r} is invalid with mask_method='hpm': its losses are "
                "predicted by an EMA copy of the model; allowed values: 'ema'."
            )
        _require_count("block_min_patches", self.block_min_patches, 1)
        if isinstance(self.block_min_aspect, bool) or not 0.0 < float(self.block_min_aspect) <= 1.0:
            raise ValueError(
                f"GPAConfig.block_min_aspect={self.block_min_aspect!r} is invalid; allowed values: a number in (0, 1]."
            )
        for field in ("hpm_momentum_start", "hpm_momentum_end"):
            _require_fraction(field, getattr(self, field))
        _require_count("hpm_momentum_epochs", self.hpm_momentum_epochs, 0)
        _require_weight("hpm_loss_weight", self.hpm_loss_weight)
        _require_bool("hpm_relative", self.hpm_relative)
        if self.hpm_predictor_layers is not None:
            _require_count("hpm_predictor_layers", self.hpm_predictor_layers, 1)

    def _validate_mask_ratio(self) -> None:
        """``mask_ratio`` in (0, 1), leaving at least one patch visible and one masked: 0 masks nothing (the pixel
        loss averages over no patches: NaN from the first step) and 1 leaves the encoder no input."""
        ratio = self.mask_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"GPAConfig.mask_ratio={ratio!r} is invalid; allowed values: a number in (0, 1).")
        (height, width), (patch_height, patch_width) = pair(self.image_size), pair(self.patch_size)
        num_patches = (height // patch_height) * (width // patch_width)
        visible = int(num_patches * (1 - ratio))
        if num_patches and not 0 < visible < num_patches:
            raise ValueError(
                f"GPAConfig.mask_ratio={ratio!r} is invalid for {num_patches} patches: it keeps {visible} visible; "
                "allowed values: a ratio that masks at least one patch and keeps at least one."
            )

    def _validate_backbone(self) -> None:
        if self.add_fpn and len(self.out_indices) != 4:
            raise ValueError(
                f"GPAConfig.out_indices={self.out_indices} is invalid with add_fpn=True; allowed values: 4 stages of "
                f"{self.stage_names[0]}..{self.stage_names[-1]}, e.g. {default_out_indices(12)} for ViT-B."
            )
        _require_fraction("drop_path_rate", self.drop_path_rate)

    def _validate_teacher_image_size(self) -> None:
        size = self.gpa_teacher_image_size
        if size is None:
            return
        image_side, patch_sides = min(pair(self.image_size)), pair(self.patch_size)
        whole_patches = isinstance(size, int) and not isinstance(size, bool) and not any(size % p for p in patch_sides)
        if not whole_patches or not 0 < size < image_side:
            half = image_side // 2 // max(patch_sides) * max(patch_sides)
            example = f" (e.g. {half})" if half else ""
            raise ValueError(
                f"GPAConfig.gpa_teacher_image_size={size!r} is invalid; allowed values: None, or a multiple of "
                f"patch_size {self.patch_size} smaller than image_size {self.image_size}{example}."
            )

    def resolved_gpa_layer(self, num_layers: int) -> int:
        """``gpa_layer`` as a non-negative block index for a teacher of ``num_layers`` blocks."""
        return resolve_index("gpa_layer", self.gpa_layer, num_layers, "blocks")

    def resolved_gpa_head(self, num_heads: int) -> int | None:
        """``gpa_head`` as a non-negative head index (or ``None``) for a teacher of ``num_heads`` heads."""
        if self.gpa_head is None:
            return None
        return resolve_index("gpa_head", self.gpa_head, num_heads, "heads")


__all__ = ["GPAConfig", "MASK_METHODS", "default_out_indices", "pair"]
