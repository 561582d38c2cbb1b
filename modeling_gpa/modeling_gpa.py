"""GPA pretraining: ViTMAE masked by a teacher's Global Patch-wise Attention, plus Masked Attention Modeling."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from transformers import ViTForImageClassification, ViTModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling
from transformers.models.vit.modeling_vit import ViTPreTrainedModel
from transformers.models.vit_mae.modeling_vit_mae import (
    ViTMAEDecoder,
    ViTMAEEmbeddings,
    ViTMAEForPreTraining,
    ViTMAEModel,
    ViTMAEPreTrainedModel,
    build_2d_sinusoidal_position_embedding,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, auto_docstring, can_return_tuple, logging

from .configuration_gpa import GPAConfig
from .gpa import loss_patch_weights, zscore_normalize
from .masking import gpa_noise, mask_fractions
from .teacher import build_teacher_from_config, ema_update, freeze, load_pretrained_teacher, teacher_scores

logger = logging.get_logger(__name__)

# Every Auto class a GPA checkpoint answers to, with the class of this module that serves it: written into the
# config's auto_map on save, so trust_remote_code finds all of them, whichever class saved the checkpoint.
GPA_AUTO_CLASSES = {
    "AutoModel": "GPAModel",
    "AutoModelForPreTraining": "GPAForPreTraining",
    "AutoModelForImageClassification": "GPAForImageClassification",
    "AutoBackbone": "GPABackbone",
}
# Tensors that Transformers' ViTMAE init leaves unset when a checkpoint lacks them (see _initialize_missing_keys).
POSITION_AND_TOKEN_NAMES = ("position_embeddings", "cls_token", "decoder_pos_embed", "mask_token")
# Checkpoint parts that only pretraining uses: the encoder-only classes drop them by design, without a report.
PRETRAINING_ONLY_KEYS = [r"^decoder\.", r"^teacher\.", r"^gpa_head\.", r"^gpa_decoder\.", r"^teacher_initialized$"]


@dataclass
class GPAForPreTrainingOutput(ModelOutput):
    """Outputs of [`GPAForPreTraining`].

    Args:
        loss: scalar, ``rgb_loss + gpa_loss_weight * gpa_loss`` (``rgb_loss`` alone without MAM).
        rgb_loss: scalar, MAE's pixel MSE on masked patches.
        gpa_loss: scalar MSE of the predicted z-scored GPA over ``gpa_loss_patches`` (masked ones by default), or
            ``None`` without MAM.
        logits: (B, n, patch_size**2 * C) predicted pixels.
        gpa_logits: (B, n) predicted z-scored GPA, or ``None`` without MAM.
        mask: (B, n), 1 for masked patches.
        ids_restore: (B, n) indices restoring patch order.
        gpa: (B, n) raw teacher scores used, or ``None`` when neither the mask nor MAM needed them.
    """

    loss: torch.FloatTensor | None = None
    rgb_loss: torch.FloatTensor | None = None
    gpa_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    gpa_logits: torch.FloatTensor | None = None
    mask: torch.LongTensor | None = None
    ids_restore: torch.LongTensor | None = None
    gpa: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def masked_mean(per_patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, n) values, (B, n) weights (the mask, or any 0/1 patch selection) -> scalar mean over the selected patches."""
    return (per_patch * mask).sum() / mask.sum()


class GPAAutoMapMixin:
    """``save_pretrained`` that lists every GPA Auto class in ``config.auto_map`` when the code is saved too."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        with own_class(self):
            if getattr(self, "_auto_class", None) is not None:
                module = type(self).__module__.rsplit(".", 1)[-1]
                auto_map = dict(getattr(self.config, "auto_map", None) or {})
                auto_map.update({auto: f"{module}.{name}" for auto, name in GPA_AUTO_CLASSES.items()})
                self.config.auto_map = auto_map
            return super().save_pretrained(save_directory, *args, **kwargs)


@contextmanager
def own_class(model: nn.Module) -> Iterator[None]:
    """Inside: ``model`` as an instance of its own class, also when FSDP2 sharded it.

    ``fully_shard`` swaps a model's class for ``FSDP<Name>(FSDPModule, <Name>)``, defined in torch: Transformers
    would then write torch's module into ``auto_map`` and copy torch's files beside the weights.
    """
    sharded_class = type(model)
    if not isinstance(model, FSDPModule):
        yield
        return
    model.__class__ = next(base for base in sharded_class.__bases__ if base is not FSDPModule)
    try:
        yield
    finally:
        model.__class__ = sharded_class


class GPAForPreTraining(GPAAutoMapMixin, ViTMAEForPreTraining):
    """ViTMAE pretraining with GPA soft-to-hard masking and, optionally, Masked Attention Modeling.

    The encoder (``vit``) and pixel decoder (``decoder``) are ViTMAE's own, so ``ViTForImageClassification`` and
    ``ViTMAEModel`` load a GPA checkpoint directly. Teachers:

    - ``"self"``: the student encoder on the full image under ``no_grad``; no extra weights.
    - ``"ema"``: ``teacher``, a momentum copy of the encoder; its weights are saved with the model.
    - ``"pretrained"``: ``teacher``, a frozen ViT/ViTMAE from ``gpa_teacher_name_or_path``. Its weights are saved
      in the checkpoint too, with its config in ``gpa_teacher_config``, so a checkpoint loads on a machine where
      that path does not exist.
    """

    config_class = GPAConfig
    config: GPAConfig

    def __init__(self, config: GPAConfig):
        ViTMAEPreTrainedModel.__init__(self, config)
        config.validate_gpa()
        self.config = config
        self.vit = ViTMAEModel(config)
        num_patches = self.vit.embeddings.patch_embeddings.num_patches
        self.decoder = ViTMAEDecoder(config, num_patches=num_patches)
        self.teacher = self._build_teacher(config)
        self.gpa_decoder, self.gpa_head = self._build_gpa_predictor(config, num_patches)
        # Always 1.0: the EMA teacher starts as a copy of the student, made here and never in forward (a branch on
        # a tensor would cost a host sync and break torch.compile / torch.export graphs). Kept in checkpoints so
        # that older ones, saved with 0.0 before their first EMA step, get their teacher copied when loaded.
        self.register_buffer("teacher_initialized", torch.tensor(1.0))
        self.post_init()
        # ViTMAEModel initialises itself in its own __init__, so _init_weights above never sees its embeddings.
        init_position_tables(self.vit.embeddings, config.initializer_range)
        if config.gpa_teacher == "ema":
            self._copy_student_to_teacher()
        self._validate_teacher_geometry()

    @staticmethod
    def _build_teacher(config: GPAConfig) -> nn.Module | None:
        if config.gpa_teacher == "ema":
            return freeze(ViTMAEModel(config))
        if config.gpa_teacher != "pretrained":
            return None
        if config.gpa_teacher_config is not None and torch.get_default_device().type == "meta":
            # from_pretrained builds the model on the meta device, then loads every weight, the teacher's included,
            # from the checkpoint: loading the teacher's own checkpoint there would fail (and be overwritten).
            return build_teacher_from_config(config.gpa_teacher_config)
        try:
            teacher = load_pretrained_teacher(config.gpa_teacher_name_or_path)
        except OSError:
            if config.gpa_teacher_config is None:
                raise
            return build_teacher_from_config(config.gpa_teacher_config)
        config.gpa_teacher_config = teacher.config.to_dict()
        return teacher

    @staticmethod
    def _build_gpa_predictor(config: GPAConfig, num_patches: int) -> tuple[nn.Module | None, nn.Module | None]:
        if not config.gpa_prediction:
            return None, None
        if config.gpa_decoder_layers == 0:
            return None, nn.Linear(config.decoder_hidden_size, 1)
        gpa_decoder_config = copy.deepcopy(config)
        gpa_decoder_config.decoder_num_hidden_layers = config.gpa_decoder_layers
        gpa_decoder = ViTMAEDecoder(gpa_decoder_config, num_patches=num_patches)
        gpa_decoder.decoder_pred = nn.Linear(config.decoder_hidden_size, 1)
        return gpa_decoder, None

    def _validate_teacher_geometry(self) -> None:
        """A teacher must see the student's patch grid, and have the configured block and head."""
        encoder = self.teacher_encoder
        teacher_grid = encoder.embeddings.patch_embeddings
        student_grid = self.vit.embeddings.patch_embeddings
        if teacher_grid.num_channels != student_grid.num_channels:
            raise ValueError(
                f"GPAConfig.gpa_teacher_name_or_path={self.config.gpa_teacher_name_or_path!r} takes "
                f"{teacher_grid.num_channels}-channel images but the student {student_grid.num_channels}-channel ones; "
                f"allowed values: a teacher with num_channels={student_grid.num_channels} (or pass --num_channels "
                f"{teacher_grid.num_channels} to convert the images for both)."
            )
        if (tuple(teacher_grid.image_size), tuple(teacher_grid.patch_size)) != (
            tuple(student_grid.image_size),
            tuple(student_grid.patch_size),
        ):
            raise ValueError(
                f"GPAConfig.gpa_teacher_name_or_path={self.config.gpa_teacher_name_or_path!r} has image_size "
                f"{teacher_grid.image_size} and patch_size {teacher_grid.patch_size}, but the student has "
                f"{student_grid.image_size} and {student_grid.patch_size}; allowed values: a teacher with the "
                "student's patch grid."
            )
        self.config.resolved_gpa_layer(len(encoder.layers))
        self.config.resolved_gpa_head(encoder.config.num_attention_heads)

    def _init_weights(self, module: nn.Module) -> None:
        """ViTMAE's init, plus sin-cos position tables and random CLS / mask tokens (zero upstream)."""
        super()._init_weights(module)
        if isinstance(module, GPAForPreTraining):
            init.constant_(module.teacher_initialized, 1.0)
        elif isinstance(module, (ViTMAEEmbeddings, ViTMAEDecoder)):
            init_position_tables(module, self.config.initializer_range)

    @property
    def teacher_encoder(self) -> nn.Module:
        """The encoder whose attention scores the patches."""
        return self.vit if self.teacher is None else self.teacher

    def train(self, mode: bool = True) -> GPAForPreTraining:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @torch.no_grad()
    def update_teacher(self) -> None:
        """One momentum step of the ``"ema"`` teacher (call after each optimizer step); no-op for other teachers."""
        if self.config.gpa_teacher != "ema":
            return
        ema_update(self.teacher, self.vit, self.config.gpa_ema_momentum)

    @torch.no_grad()
    def _copy_student_to_teacher(self, names: list[str] | None = None) -> None:
        """The EMA teacher's start: the student's tensors ``names`` (all when None) copied into the teacher."""
        student = self.vit.state_dict()
        teacher = self.teacher.state_dict()
        for name in student if names is None else names:
            teacher[name].copy_(student[name])
        self.teacher_initialized.fill_(1.0)

    def _initialize_missing_keys(self, is_quantized: bool) -> None:
        """Transformers' init of the weights a checkpoint lacks, plus what it misses, with a warning naming them.

        The encoders are models of their own, so Transformers initialises them with ViTMAE's rules, which skip the
        position table and CLS token once the patch projection is loaded: they would stay uninitialised memory.
        Here they get the sin-cos table and a drawn token, and the EMA teacher's missing tensors the student's.
        """
        missing = [
            name
            for name, tensor in self.state_dict(keep_vars=True).items()
            if not getattr(tensor, "_is_hf_initialized", False)
        ]
        super()._initialize_missing_keys(is_quantized)
        with torch.no_grad():
            init_position_tables(self.vit.embeddings, self.config.initializer_range)
        repaired = [name for name in missing if name.rsplit(".", 1)[-1] in POSITION_AND_TOKEN_NAMES]
        repaired = [name for name in repaired if not name.startswith("teacher.")]
        if repaired:
            logger.warning(
                f"The checkpoint lacks {', '.join(repaired)}: wrote MAE's 2-D sin-cos position tables and drew the "
                "CLS / mask tokens."
            )
        if self.config.gpa_teacher == "ema":
            self._complete_ema_teacher([name for name in missing if name.startswith("teacher.")])

    def _complete_ema_teacher(self, missing: list[str]) -> None:
        """After loading: the EMA teacher's ``missing`` tensors (or all, if it never copied the student) copied."""
        if not bool(self.teacher_initialized):
            logger.warning(
                "The checkpoint's EMA teacher never copied the student (teacher_initialized = 0: saved before its "
                "first EMA step by an older version): copied the student into it."
            )
            self._copy_student_to_teacher()
        elif missing:
            logger.warning(
                f"The checkpoint lacks {len(missing)} EMA teacher tensors ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}): copied them from the student."
            )
            self._copy_student_to_teacher([name.removeprefix("teacher.") for name in missing])

    @torch.no_grad()
    def compute_gpa(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, n) raw float32 teacher scores at the configured block and head.

        The teacher runs only up to that block, and in it only LayerNorm and the Q/K projections. With
        ``gpa_teacher_image_size`` it scores the image resized to that side, (B, n_small), and the map is upsampled
        bilinearly to the student's (H / patch, W / patch) grid.
        """
        encoder = self.teacher_encoder
        pixel_values = pixel_values.to(encoder.embeddings.patch_embeddings.projection.weight.dtype)
        teacher_size = self.config.gpa_teacher_image_size
        teacher_pixels = pixel_values
        if teacher_size is not None:
            teacher_pixels = nn.functional.interpolate(pixel_values, size=(teacher_size, teacher_size), mode="area")
        scores = teacher_scores(
            encoder,
            teacher_pixels,
            layer=self.config.resolved_gpa_layer(len(encoder.layers)),
            head=self.config.resolved_gpa_head(encoder.config.num_attention_heads),
            score=self.config.gpa_score,
            queries=self.config.gpa_queries,
            interpolate_pos_encoding=teacher_size is not None or bool(interpolate_pos_encoding),
        )
        if teacher_size is None:
            return scores
        patch_height, patch_width = self.vit.embeddings.patch_embeddings.patch_size
        small_grid = (teacher_size // patch_height, teacher_size // patch_width)
        student_grid = (pixel_values.shape[-2] // patch_height, pixel_values.shape[-1] // patch_width)
        scores = scores.view(-1, 1, *small_grid)
        return nn.functional.interpolate(scores, size=student_grid, mode="bilinear", align_corners=False).flatten(1)

    def mask_fractions(self, progress: float) -> tuple[float, float, float]:
        """(hard, soft, random) fractions of the masked patches at training progress in [0, 1]."""
        return mask_fractions(progress, *self._ratio_schedule())

    def _ratio_schedule(self) -> tuple[tuple[float, float], tuple[float, float]]:
        config = self.config
        return (config.hard_ratio_start, config.hard_ratio_end), (config.soft_ratio_start, config.soft_ratio_end)

    def _decoder_hidden_states(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, interpolate_pos_encoding: bool
    ) -> torch.Tensor:
        """ViTMAE's decoder up to ``decoder_norm``: (B, 1+len_keep, D) latent -> (B, 1+n, D_dec) hidden states."""
        decoder = self.decoder
        hidden_states = decoder.decoder_embed(latent)
        num_masked = ids_restore.shape[1] + 1 - hidden_states.shape[1]
        mask_tokens = decoder.mask_token.expand(hidden_states.shape[0], num_masked, -1)
        tokens = torch.cat([hidden_states[:, 1:], mask_tokens], dim=1)
        index = ids_restore.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        tokens = torch.gather(tokens, dim=1, index=index)
        hidden_states = torch.cat([hidden_states[:, :1], tokens], dim=1)
        if interpolate_pos_encoding:
            hidden_states = hidden_states + decoder.interpolate_pos_encoding(hidden_states)
        else:
            hidden_states = hidden_states + decoder.decoder_pos_embed
        for layer in decoder.decoder_layers:
            hidden_states = layer(hidden_states)
        return decoder.decoder_norm(hidden_states)

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_progress: float | torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> GPAForPreTrainingOutput:
        r"""
        noise (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            If given, the mask comes from it, as in ViTMAE (plain MAE masking); otherwise from the teacher's GPA.
        mask_progress (`float` or 0-d `torch.Tensor`, *optional*, defaults to 0.0):
            Training progress in [0, 1] for the soft-to-hard schedule. Under `torch.compile`, pass a 0-d tensor
            (`modeling_gpa.masking.progress_tensor`): a Python float is a constant of the graph, so each new value
            would compile it again.
        interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
            Whether to interpolate the position encodings, for images of another size than the model's.
        """
        interpolate = bool(interpolate_pos_encoding)
        gpa = None
        if noise is None or self.config.gpa_prediction:
            gpa = self.compute_gpa(pixel_values, interpolate)
        if noise is None:
            hard, soft = self._ratio_schedule()
            progress = 0.0 if mask_progress is None else mask_progress
            noise = gpa_noise(gpa, self.config.mask_ratio, progress, hard=hard, soft=soft)

        outputs = self.vit(
            pixel_values,
            noise=noise,
            interpolate_pos_encoding=interpolate,
            attention_mask=attention_mask,
            return_dict=True,
            **kwargs,
        )
        latent, mask, ids_restore = outputs.last_hidden_state, outputs.mask, outputs.ids_restore
        decoder_hidden = self._decoder_hidden_states(latent, ids_restore, interpolate)
        logits = self.decoder.decoder_pred(decoder_hidden)[:, 1:]

        target = self.patchify(pixel_values, interpolate_pos_encoding=interpolate)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        rgb_loss = masked_mean(((logits - target) ** 2).mean(dim=-1), mask)

        gpa_logits = gpa_loss = None
        loss = rgb_loss
        if self.config.gpa_prediction:
            if self.gpa_decoder is not None:
                gpa_logits = self.gpa_decoder(latent, ids_restore, interpolate_pos_encoding=interpolate).logits
            else:
                gpa_logits = self.gpa_head(decoder_hidden)[:, 1:]
            gpa_logits = gpa_logits.squeeze(-1)
            gpa_target = zscore_normalize(gpa, self.config.gpa_target_norm)
            region = loss_patch_weights(mask, self.config.gpa_loss_patches)
            gpa_loss = masked_mean((gpa_logits.float() - gpa_target) ** 2, region)
            loss = rgb_loss + self.config.gpa_loss_weight * gpa_loss

        return GPAForPreTrainingOutput(
            loss=loss,
            rgb_loss=rgb_loss,
            gpa_loss=gpa_loss,
            logits=logits,
            gpa_logits=gpa_logits,
            mask=mask,
            ids_restore=ids_restore,
            gpa=gpa,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class GPAModel(GPAAutoMapMixin, ViTPreTrainedModel):
    """The encoder of a GPA checkpoint as a feature extractor: ``AutoModel.from_pretrained(<GPA checkpoint>)``.

    ``vit`` is a ``ViTModel`` with the checkpoint's encoder weights: it sees every patch, unmasked and in order, and
    returns ``last_hidden_state`` (B, 1+n, D), CLS first. No pooling layer unless ``add_pooling_layer=True`` (whose
    weights a GPA checkpoint does not hold). The decoder, MAM head and teacher stay unloaded.
    """

    config_class = GPAConfig
    config: GPAConfig
    _keys_to_ignore_on_load_unexpected = PRETRAINING_ONLY_KEYS

    def __init__(self, config: GPAConfig, add_pooling_layer: bool = False):
        super().__init__(config)
        # A ViTModel inside, not this class as one: the checkpoint's `vit.*` keys then load through Transformers'
        # own ViT key mapping, as they do for ViTForImageClassification.
        self.vit = ViTModel(config, add_pooling_layer=add_pooling_layer)
        self.post_init()

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
            Whether to interpolate the position encodings, for images of another size than the model's.
        """
        return self.vit(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs)


class GPAForImageClassification(GPAAutoMapMixin, ViTForImageClassification):
    """A ViT classifier on a GPA checkpoint's encoder: ``AutoModelForImageClassification.from_pretrained(<ckpt>)``.

    The encoder's weights load unchanged; the linear ``classifier`` on the CLS token is new (``num_labels``).
    """

    config_class = GPAConfig
    config: GPAConfig
    _keys_to_ignore_on_load_unexpected = PRETRAINING_ONLY_KEYS


class DropPath(nn.Module):
    """Stochastic depth: in training, zeroes a residual branch for a random ``rate`` share of the samples and scales
    the others by ``1 / (1 - rate)`` (timm's ``DropPath``); the identity in eval."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, ...)."""
        if not self.training or self.rate == 0.0:
            return hidden_states
        keep = 1.0 - self.rate
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        return hidden_states * hidden_states.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class GPAFeaturePyramid(nn.Module):
    """BEiT/MAE's neck for a plain ViT: four (B, D, h, w) maps of one scale -> 4x, 2x, 1x and 1/2x of it.

    4x: two stride-2 transposed convolutions with BatchNorm and GELU between; 2x: one; 1x: the map itself; 1/2x:
    2x2 max-pooling. The same modules as ``BeitFPNNeck``, so weights move between the two.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(hidden_size, hidden_size, kernel_size=2, stride=2),
            nn.BatchNorm2d(hidden_size),
            nn.GELU(),
            nn.ConvTranspose2d(hidden_size, hidden_size, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.ConvTranspose2d(hidden_size, hidden_size, kernel_size=2, stride=2)
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Four (B, D, h, w) maps -> (B, D, 4h, 4w), (B, D, 2h, 2w), (B, D, h, w), (B, D, h/2, w/2)."""
        return self.fpn1(feature_maps[0]), self.fpn2(feature_maps[1]), feature_maps[2], self.fpn4(feature_maps[3])


class GPABackbone(GPAAutoMapMixin, BackboneMixin, ViTPreTrainedModel):
    """A GPA, ViTMAE or ViT encoder as a Transformers backbone: ``AutoBackbone.from_pretrained(<GPA checkpoint>)``,
    ``UperNetConfig(backbone_config=GPAConfig(...))``, DETR's ``backbone_config``.

    As ``BeitBackbone``: stages ``stem`` (patch embeddings + position table) and ``stage1..stageN`` (the blocks'
    outputs, before the final LayerNorm); ``out_features`` / ``out_indices`` pick them; each feature map is
    (B, D, H / patch, W / patch), the patch tokens in their image order (the CLS token dropped). The encoder sees
    every patch: no masking and no token shuffle. The position table is interpolated (bicubic) to the input's size,
    so a 224-pixel checkpoint runs on 512-pixel crops. ``config.drop_path_rate`` adds stochastic depth rising
    linearly over the blocks, and ``config.add_fpn`` the four-scale neck of [`GPAFeaturePyramid`].
    """

    config_class = GPAConfig
    config: GPAConfig
    # The final LayerNorm is not on any stage's path: leaving it out keeps every parameter in the graph (DDP).
    _keys_to_ignore_on_load_unexpected = [*PRETRAINING_ONLY_KEYS, r"^vit\.layernorm\.", r"^vit\.pooler\."]

    def __init__(self, config: GPAConfig):
        super().__init__(config)
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.vit.layernorm = nn.Identity()
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * index / max(depth - 1, 1) for index in range(depth)]
        for layer, rate in zip(self.vit.layers, rates, strict=True):
            # ViTLayer applies its `dropout` to each residual branch right before the addition: where timm's blocks
            # apply drop path. Dropout (hidden_dropout_prob) still runs first.
            layer.dropout = nn.Sequential(layer.dropout, DropPath(rate))
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.fpn = GPAFeaturePyramid(config.hidden_size) if config.add_fpn else None
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            Images whose sides are multiples of the patch size.
        output_hidden_states (`bool`, *optional*):
            Also return the (B, 1 + n, D) tokens of every stage, CLS first.

        Returns: `BackboneOutput` with `feature_maps`, one (B, D, h, w) map per `out_features` stage (the neck's four
        scales with `add_fpn`). Attentions are not returned (SDPA computes none).
        """
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        height, width = pixel_values.shape[-2:]
        patch_height, patch_width = self.vit.embeddings.patch_embeddings.patch_size
        if height % patch_height or width % patch_width:
            raise ValueError(
                f"GPABackbone takes images whose sides are multiples of patch_size {self.config.patch_size}; got "
                f"{height}x{width}: crop or pad them."
            )
        grid = (height // patch_height, width // patch_width)
        pixel_values = pixel_values.to(self.vit.embeddings.patch_embeddings.projection.weight.dtype)
        hidden_states = self.vit.embeddings(pixel_values, interpolate_pos_encoding=True)
        stages = [hidden_states]
        for layer in self.vit.layers:
            hidden_states = layer(hidden_states, None)
            stages.append(hidden_states)
        feature_maps = tuple(
            tokens_to_map(stages[index], grid)
            for index, name in enumerate(self.stage_names)
            if name in self.out_features
        )
        if self.fpn is not None:
            feature_maps = self.fpn(feature_maps)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=tuple(stages) if output_hidden_states else None)


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, 1 + h*w, D) tokens, CLS first and patches in row-major order -> (B, D, h, w) map of the patch tokens."""
    return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], *grid)


def init_position_tables(module: ViTMAEEmbeddings | ViTMAEDecoder, initializer_range: float) -> None:
    """Sin-cos position table and N(0, initializer_range) CLS or mask token, skipping tensors already loaded.

    ``transformers.initialization`` helpers leave alone what ``from_pretrained`` loaded, so checkpoints still win.
    """
    if isinstance(module, ViTMAEEmbeddings):
        table, token = module.position_embeddings, module.cls_token
    else:
        table, token = module.decoder_pos_embed, module.mask_token
    init.copy_(table, sincos_table(int((table.shape[1] - 1) ** 0.5), table.shape[-1]))
    init.normal_(token, std=initializer_range)


def sincos_table(grid_size: int, embed_dim: int) -> torch.Tensor:
    """(1, 1 + grid_size**2, embed_dim) MAE's 2-D sin-cos table with a zero CLS row, in ViTMAE's layout."""
    table = build_2d_sinusoidal_position_embedding(grid_size, grid_size, embed_dim=embed_dim, cls_token=True)
    # ViTMAE's pretrained checkpoints store [sin_w|cos_w|sin_h|cos_h]; keep that layout so they stay compatible.
    half = embed_dim // 2
    return torch.cat([table[..., half:], table[..., :half]], dim=-1).unsqueeze(0)


__all__ = ["GPAForPreTraining", "GPAForPreTrainingOutput", "GPAModel", "GPAForImageClassification", "GPABackbone"]
