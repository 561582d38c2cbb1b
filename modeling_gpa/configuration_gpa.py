"""Configuration of GPA pretraining: a ViTMAE configuration plus the fields of the method."""

from __future__ import annotations

import math

from transformers import ViTMAEConfig
from transformers.backbone_utils import BackboneConfigMixin

GPA_TEACHERS = ("self", "ema", "pretrained")
GPA_SCORES = ("logits", "softmax")
GPA_QUERIES = ("all", "others")
GPA_LOSS_PATCHES = ("masked", "all", "visible")
GPA_TARGET_NORMS = ("population", "released")


def _require_choice(field: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"GPAConfig.{field}={value!r} is invalid; allowed values: {', '.join(map(repr, allowed))}.")


def _require_fraction(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"GPAConfig.{field}={value!r} is invalid; allowed values: a number in [0, 1].")


def _pair(size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


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
            only (the paper's Eq. 5).
        hard_ratio_start, hard_ratio_end, soft_ratio_start, soft_ratio_end (`float`):
            Fractions of the masked patches chosen by top GPA (hard) and by GPA-weighted sampling (soft), linearly
            interpolated over training (Eq. 6); the rest is random.
        gpa_prediction (`bool`, *optional*, defaults to `True`):
            Adds Masked Attention Modeling: a head regresses the z-scored GPA of each masked patch.
        gpa_loss_weight (`float`, *optional*, defaults to 1.0):
            `loss = rgb_loss + gpa_loss_weight * gpa_loss`.
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

    def validate_gpa(self) -> None:
        """Raises ``ValueError`` naming the first invalid GPA field and its allowed values."""
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
        if not isinstance(self.gpa_prediction, bool):
            raise ValueError(
                f"GPAConfig.gpa_prediction={self.gpa_prediction!r} is invalid; allowed values: True, False."
            )
        if (
            isinstance(self.gpa_loss_weight, bool)
            or not isinstance(self.gpa_loss_weight, (int, float))
            or not math.isfinite(self.gpa_loss_weight)
            or (self.gpa_loss_weight < 0)
        ):
            raise ValueError(
                f"GPAConfig.gpa_loss_weight={self.gpa_loss_weight!r} is invalid; allowed values: a finite number >= 0."
            )
        _require_choice("gpa_loss_patches", self.gpa_loss_patches, GPA_LOSS_PATCHES)
        _require_choice("gpa_target_norm", self.gpa_target_norm, GPA_TARGET_NORMS)
        if (
            isinstance(self.gpa_decoder_layers, bool)
            or not isinstance(self.gpa_decoder_layers, int)
            or (self.gpa_decoder_layers < 0)
        ):
            raise ValueError(
                f"GPAConfig.gpa_decoder_layers={self.gpa_decoder_layers!r} is invalid; allowed values: an integer >= 0."
            )
        self._validate_teacher_image_size()
        self._validate_backbone()
        if self.gpa_teacher != "pretrained":
            self.resolved_gpa_layer(self.num_hidden_layers)
            self.resolved_gpa_head(self.num_attention_heads)

    def _validate_mask_ratio(self) -> None:
        """``mask_ratio`` in (0, 1), leaving at least one patch visible and one masked: 0 masks nothing (the pixel
        loss averages over no patches: NaN from the first step) and 1 leaves the encoder no input."""
        ratio = self.mask_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"GPAConfig.mask_ratio={ratio!r} is invalid; allowed values: a number in (0, 1).")
        (height, width), (patch_height, patch_width) = _pair(self.image_size), _pair(self.patch_size)
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
        image_side, patch_sides = min(_pair(self.image_size)), _pair(self.patch_size)
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


__all__ = ["GPAConfig", "default_out_indices"]
