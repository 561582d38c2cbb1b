"""GPA pretraining: ViTMAE masked by one of the mask strategies, with Masked Attention Modeling and HPM's predictor.

Which patches are masked is the strategy's (``mask_strategies`` lists them all); this file holds the modules: the
encoder and pixel decoder are ViTMAE's own, the MAM head and HPM's loss predictor are added heads, and the teacher
is a frozen or EMA encoder. ``save_pretrained`` copies this file, ``configuration_gpa.py`` and every module they
import relatively beside the weights for ``trust_remote_code``; transformers resolves ``from .x import`` to ``x.py``
in that folder, which is why those modules stay flat siblings at the package's top level. No
``from __future__ import annotations`` here: ``**kwargs: Unpack[TransformersKwargs]`` must stay readable at run time.
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self

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
    ViTMAELayer,
    ViTMAEModel,
    ViTMAEPreTrainedModel,
    build_2d_sinusoidal_position_embedding,
)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, auto_docstring, can_return_tuple, logging

from .configuration_gpa import ATTENTION_SCORED, GPAConfig
from .gpa import loss_patch_weights, zscore_normalize
from .hpm import hpm_momentum, relative_loss_prediction_loss, standardized_loss_prediction_loss
from .mask_strategies import mask_noise, mask_schedule
from .masking import mask_fractions, progress_tensor
from .teacher import (
    build_teacher_from_config,
    ema_update,
    freeze,
    full_image_tokens,
    load_pretrained_teacher,
    teacher_scores,
)

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
PRETRAINING_ONLY_KEYS = [
    r"^decoder\.",
    r"^teacher",
    r"^(mam|gpa)_head\.",
    r"^(mam|gpa)_decoder\.",
    r"^loss_predictor\.",
    r"^teacher_initialized$",
]
# Names of checkpoints saved before the MAM modules were named for what they do (modeling_gpa 0.1).
LEGACY_KEY_MAPPING = {r"^gpa_head\.": "mam_head.", r"^gpa_decoder\.": "mam_decoder."}
# Each EMA module and the student module it follows: the encoder for the "ema" teacher, the whole model for HPM.
EMA_PAIRS = {"teacher": "vit", "teacher_decoder": "decoder", "teacher_loss_predictor": "loss_predictor"}


@dataclass
class GPAForPreTrainingOutput(ModelOutput):
    r"""
    Outputs of [`GPAForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `pixel_loss + gpa_loss_weight * gpa_loss + hpm_loss_weight * hpm_loss` (the terms in use).
        pixel_loss (`torch.FloatTensor` of shape `()`):
            MAE's pixel MSE on the masked patches.
        gpa_loss (`torch.FloatTensor` of shape `()`, *optional*):
            MSE of the predicted z-scored attention score over `gpa_loss_patches`; `None` without MAM.
        hpm_loss (`torch.FloatTensor` of shape `()`, *optional*):
            HPM's loss-prediction term; `None` unless `mask_method="hpm"`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_patches, patch_size**2 * num_channels)`):
            Predicted pixels.
        gpa_logits (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
            Predicted z-scored attention score; `None` without MAM.
        predicted_losses (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
            The loss predictor's output; `None` unless `mask_method="hpm"`.
        mask (`torch.LongTensor` of shape `(batch_size, num_patches)`):
            1 for masked patches.
        ids_restore (`torch.LongTensor` of shape `(batch_size, num_patches)`):
            Indices restoring patch order.
        gpa (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
            Raw teacher attention scores used; `None` when neither the mask nor MAM needed them.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's hidden states, when asked for.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's attentions, when asked for.
    """

    loss: torch.FloatTensor | None = None
    pixel_loss: torch.FloatTensor | None = None
    gpa_loss: torch.FloatTensor | None = None
    hpm_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    gpa_logits: torch.FloatTensor | None = None
    predicted_losses: torch.FloatTensor | None = None
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


def decoder_config_of(config: GPAConfig, num_layers: int) -> GPAConfig:
    """A copy of ``config`` whose encoder fields are the decoder's, with ``num_layers`` blocks (as ViTMAEDecoder's)."""
    decoder_config = copy.deepcopy(config)
    decoder_config.hidden_size = config.decoder_hidden_size
    decoder_config.num_hidden_layers = decoder_config.decoder_num_hidden_layers = num_layers
    decoder_config.num_attention_heads = config.decoder_num_attention_heads
    decoder_config.intermediate_size = config.decoder_intermediate_size
    return decoder_config


class HPMLossPredictor(nn.Module):
    """HPM's loss predictor: decoder blocks of its own on the pixel decoder's input tokens, one loss per patch.

    Adapted from HPM's ``decoder_blocks_losspred``, ``decoder_norm_losspred`` and ``decoder_pred_losspred``
    (Haochen-Wang409/HPM, ``models_mae_learn_loss.py``). HPM predicts ``patch_size**2 * C`` values per patch and
    averages them; the mean of a linear layer's outputs is a linear layer, so one output here is the same function.
    """

    def __init__(self, config: GPAConfig):
        super().__init__()
        num_layers = config.hpm_predictor_layers or config.decoder_num_hidden_layers
        block_config = decoder_config_of(config, num_layers)
        self.layers = nn.ModuleList([ViTMAELayer(block_config) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.pred = nn.Linear(config.decoder_hidden_size, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1+n, D_dec) decoder input tokens (CLS first, patch order) -> (B, n) predicted losses."""
        for layer in self.layers:
            tokens = layer(tokens)
        return self.pred(self.norm(tokens))[:, 1:, 0]


class GPAForPreTraining(GPAAutoMapMixin, ViTMAEForPreTraining):
    """ViTMAE pretraining with the mask strategy of ``config.mask_method``, Masked Attention Modeling and HPM.

    The encoder (``vit``) and pixel decoder (``decoder``) are ViTMAE's own, so ``ViTForImageClassification`` and
    ``ViTMAEModel`` load a checkpoint of any strategy directly. Teachers of the attention scores:

    - ``"self"``: the student encoder on the full image under ``no_grad``; no extra weights.
    - ``"ema"``: ``teacher``, a momentum copy of the encoder; its weights are saved with the model. With
      ``mask_method="hpm"`` the copy is of the whole model (``teacher``, ``teacher_decoder``,
      ``teacher_loss_predictor``), with HPM's momentum schedule.
    - ``"pretrained"``: ``teacher``, a frozen ViT/ViTMAE from ``gpa_teacher_name_or_path``. Its weights are saved
      in the checkpoint too, with its config in ``gpa_teacher_config``, so a checkpoint loads on a machine where
      that path does not exist.

    Checkpoints of modeling_gpa 0.1 name the MAM modules ``gpa_head`` / ``gpa_decoder``; ``from_pretrained`` maps
    them to ``mam_head`` / ``mam_decoder`` ([`LEGACY_KEY_MAPPING`]).
    """

    config_class = GPAConfig
    config: GPAConfig
    _keys_to_ignore_on_load_unexpected = [r"^teacher_initialized$"]

    def __init__(self, config: GPAConfig):
        ViTMAEPreTrainedModel.__init__(self, config)
        config.validate_gpa()
        self.config = config
        self.vit = ViTMAEModel(config)
        num_patches = self.vit.embeddings.patch_embeddings.num_patches
        self.decoder = ViTMAEDecoder(config, num_patches=num_patches)
        self.mam_decoder, self.mam_head = self._build_mam_predictor(config, num_patches)
        self.loss_predictor = HPMLossPredictor(config) if config.mask_method == "hpm" else None
        self.teacher = self._build_teacher(config)
        if config.mask_method == "hpm":
            self.teacher_decoder = freeze(ViTMAEDecoder(config, num_patches=num_patches))
            self.teacher_loss_predictor = freeze(HPMLossPredictor(config))
        self.post_init()
        # ViTMAEModel initialises itself in its own __init__, so _init_weights above never sees its embeddings.
        init_position_tables(self.vit.embeddings, config.initializer_range)
        # The EMA copy starts as the student, copied here and never in forward (a branch on a tensor there would
        # cost a host sync and break torch.compile / torch.export graphs).
        self._copy_student_to_teacher()
        self._validate_teacher_geometry()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``; checkpoints of modeling_gpa 0.1 load through [`LEGACY_KEY_MAPPING`]."""
        kwargs.setdefault("key_mapping", LEGACY_KEY_MAPPING)
        return super().from_pretrained(*args, **kwargs)

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
    def _build_mam_predictor(config: GPAConfig, num_patches: int) -> tuple[nn.Module | None, nn.Module | None]:
        if not config.gpa_prediction:
            return None, None
        if config.gpa_decoder_layers == 0:
            return None, nn.Linear(config.decoder_hidden_size, 1)
        mam_decoder = ViTMAEDecoder(decoder_config_of(config, config.gpa_decoder_layers), num_patches=num_patches)
        mam_decoder.decoder_pred = nn.Linear(config.decoder_hidden_size, 1)
        return mam_decoder, None

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
        if isinstance(module, (ViTMAEEmbeddings, ViTMAEDecoder)):
            init_position_tables(module, self.config.initializer_range)

    @property
    def teacher_encoder(self) -> nn.Module:
        """The encoder whose attention scores the patches."""
        return self.vit if self.teacher is None else self.teacher

    @property
    def mask_schedule(self):
        """The Eq. 6 schedule of the mask strategy (no hard or soft share for ``random`` and ``block``)."""
        return mask_schedule(self.config)

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        for name in EMA_PAIRS:
            if getattr(self, name, None) is not None:
                getattr(self, name).eval()
        return self

    def _ema_pairs(self) -> list[tuple[str, str]]:
        """(EMA module, student module) names of this model's momentum copy; none without an ``"ema"`` teacher."""
        if self.config.gpa_teacher != "ema":
            return []
        return [(name, student) for name, student in EMA_PAIRS.items() if getattr(self, name, None) is not None]

    def ema_momentum(self, epoch: float = 0.0) -> float:
        """Momentum of the EMA step in ``epoch``: ``gpa_ema_momentum``, or HPM's schedule with ``mask_method="hpm"``."""
        config = self.config
        if config.mask_method != "hpm":
            return config.gpa_ema_momentum
        return hpm_momentum(epoch, config.hpm_momentum_start, config.hpm_momentum_end, config.hpm_momentum_epochs)

    @torch.no_grad()
    def update_teacher(self, epoch: float = 0.0) -> float | None:
        """One momentum step of the EMA copy (call after each optimizer step, with the epoch count reached).

        Returns the momentum used, or ``None`` without an ``"ema"`` teacher.
        """
        pairs = self._ema_pairs()
        if not pairs:
            return None
        momentum = self.ema_momentum(epoch)
        for teacher, student in pairs:
            ema_update(getattr(self, teacher), getattr(self, student), momentum)
        return momentum

    @torch.no_grad()
    def _copy_student_to_teacher(self, names: list[str] | None = None) -> None:
        """The EMA copy's start: the student's tensors ``names`` (full state-dict keys; all when None) copied."""
        for teacher, student in self._ema_pairs():
            source = getattr(self, student).state_dict()
            target = getattr(self, teacher).state_dict()
            prefix = f"{teacher}."
            wanted = source if names is None else [n.removeprefix(prefix) for n in names if n.startswith(prefix)]
            for name in wanted:
                target[name].copy_(source[name])

    def _initialize_missing_keys(self, is_quantized: bool) -> None:
        """Transformers' init of the weights a checkpoint lacks, plus what it misses, with a warning naming them.

        The encoders are models of their own, so Transformers initialises them with ViTMAE's rules, which skip the
        position table and CLS token once the patch projection is loaded: they would stay uninitialised memory.
        Here they get the sin-cos table and a drawn token, and the EMA copy's missing tensors the student's.
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
        repaired = [name for name in repaired if not name.startswith("teacher")]
        if repaired:
            logger.warning(
                f"The checkpoint lacks {', '.join(repaired)}: wrote MAE's 2-D sin-cos position tables and drew the "
                "CLS / mask tokens."
            )
        missing_ema = [name for name in missing if name.split(".", 1)[0] in dict(self._ema_pairs())]
        if missing_ema:
            logger.warning(
                f"The checkpoint lacks {len(missing_ema)} EMA teacher tensors ({', '.join(missing_ema[:3])}"
                f"{', ...' if len(missing_ema) > 3 else ''}): copied them from the student."
            )
            self._copy_student_to_teacher(missing_ema)

    @torch.no_grad()
    def compute_gpa(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, n) raw float32 teacher scores at the configured block and head.

        The teacher runs only up to that block, and in it only LayerNorm and the Q/K projections. ``gpa_queries``
        picks the score: GPA's column sum, or the CLS row (``"cls"``). With ``gpa_teacher_image_size`` it scores the
        image resized to that side, (B, n_small), and the map is upsampled bilinearly to the student's grid.
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

    @torch.no_grad()
    def teacher_predicted_losses(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """(B, C, H, W) -> (B, n) HPM's score: the losses the EMA copy predicts for every patch of the full image.

        Adapted from HPM's ``engine_pretrain.py``, which runs the EMA model with nothing masked.
        """
        encoder = self.teacher
        hidden_states = full_image_tokens(encoder, pixel_values, interpolate_pos_encoding)
        for layer in encoder.layers:
            hidden_states = layer(hidden_states)
        tokens = decoder_input(self.teacher_decoder, encoder.layernorm(hidden_states), None, interpolate_pos_encoding)
        return self.teacher_loss_predictor(tokens).float()

    def mask_score(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor | None:
        """(B, C, H, W) -> (B, n) the strategy's score: attention (gpa, cls_attention), predicted losses (hpm) or
        ``None`` (block, random)."""
        if self.config.mask_method in ATTENTION_SCORED:
            return self.compute_gpa(pixel_values, interpolate_pos_encoding)
        if self.config.mask_method == "hpm":
            return self.teacher_predicted_losses(pixel_values, interpolate_pos_encoding)
        return None

    def mask_fractions(self, progress: float) -> tuple[float, float, float]:
        """(hard, soft, random) fractions of the masked patches at training progress in [0, 1]."""
        return mask_fractions(progress, self.mask_schedule)

    def forward_loss(
        self, pixel_values: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, interpolate_pos_encoding: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) images, (B, n, p*p*C) predictions, (B, n) mask -> scalar pixel loss and (B, n) per patch.

        Adapted from MAE's ``forward_loss`` (as ``ViTMAEForPreTraining.forward`` computes it): MSE to the patch's
        pixels, per-patch normalised with ``norm_pix_loss``, averaged over the masked patches.
        """
        target = self.patchify(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = ((logits - target) ** 2).mean(dim=-1)
        return masked_mean(per_patch, mask), per_patch

    def _mam_loss(
        self,
        latent: torch.Tensor,
        ids_restore: torch.Tensor,
        decoder_hidden: torch.Tensor,
        score: torch.Tensor,
        mask: torch.Tensor,
        progress: torch.Tensor,
        interpolate_pos_encoding: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked Attention Modeling: (B, n) predicted z-scored score and the scalar MSE to it.

        The linear ``mam_head`` reads the pixel decoder's hidden states; a ``mam_decoder`` decodes the latent
        itself, through its blocks from ``gpa_decoder_switch`` on (from the start when it is ``None``) and straight
        from its input tokens before (the released MAM head's switch).
        """
        if self.mam_decoder is None:
            prediction = self.mam_head(decoder_hidden)[:, 1:, 0]
        else:
            decoder = self.mam_decoder
            tokens = decoder_input(decoder, latent, ids_restore, interpolate_pos_encoding)
            hidden = decoder_blocks(decoder, tokens)
            switch = self.config.gpa_decoder_switch
            if switch is not None:
                # Both paths run, so the step's graph and the blocks' gradients exist whatever the progress.
                hidden = torch.where(progress >= switch, hidden, decoder.decoder_norm(tokens))
            prediction = decoder.decoder_pred(hidden)[:, 1:, 0]
        target = zscore_normalize(score, self.config.gpa_target_norm)
        region = loss_patch_weights(mask, self.config.gpa_loss_patches)
        return prediction, masked_mean((prediction.float() - target) ** 2, region)

    def _hpm_loss(self, tokens: torch.Tensor, per_patch: torch.Tensor, mask: torch.Tensor):
        """HPM's loss prediction on the pixel decoder's input ``tokens``: (B, n) predictions and the scalar term."""
        predicted = self.loss_predictor(tokens)
        objective = relative_loss_prediction_loss if self.config.hpm_relative else standardized_loss_prediction_loss
        return predicted, objective(predicted, per_patch, mask)

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
            If given, the mask comes from it, as in ViTMAE; otherwise from the strategy of `config.mask_method`.
        mask_progress (`float` or 0-d `torch.Tensor`, *optional*, defaults to 0.0):
            Training progress in [0, 1] for the mask schedule (and the MAM decoder's switch). Under `torch.compile`,
            pass a 0-d tensor (`modeling_gpa.masking.progress_tensor`): a Python float is a constant of the graph,
            so each new value would compile it again.
        interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
            Whether to interpolate the position encodings, for images of another size than the model's.
        """
        interpolate = bool(interpolate_pos_encoding)
        progress = progress_tensor(0.0 if mask_progress is None else mask_progress, pixel_values.device)
        gpa = None
        if self.config.gpa_prediction:
            gpa = self.compute_gpa(pixel_values, interpolate)
        if noise is None:
            score = gpa if gpa is not None else self.mask_score(pixel_values, interpolate)
            noise = mask_noise(self.config, score, pixel_values, progress)
            if self.config.mask_method in ATTENTION_SCORED:
                gpa = score

        outputs = self.vit(
            pixel_values,
            noise=noise,
            interpolate_pos_encoding=interpolate,
            attention_mask=attention_mask,
            return_dict=True,
            **kwargs,
        )
        latent, mask, ids_restore = outputs.last_hidden_state, outputs.mask, outputs.ids_restore
        tokens = decoder_input(self.decoder, latent, ids_restore, interpolate)
        decoder_hidden = decoder_blocks(self.decoder, tokens)
        logits = self.decoder.decoder_pred(decoder_hidden)[:, 1:]
        pixel_loss, per_patch = self.forward_loss(pixel_values, logits, mask, interpolate)

        loss = pixel_loss
        gpa_logits = gpa_loss = predicted_losses = hpm_loss = None
        if self.config.gpa_prediction:
            gpa_logits, gpa_loss = self._mam_loss(latent, ids_restore, decoder_hidden, gpa, mask, progress, interpolate)
            loss = loss + self.config.gpa_loss_weight * gpa_loss
        if self.loss_predictor is not None:
            predicted_losses, hpm_loss = self._hpm_loss(tokens, per_patch, mask)
            loss = loss + self.config.hpm_loss_weight * hpm_loss

        return GPAForPreTrainingOutput(
            loss=loss,
            pixel_loss=pixel_loss,
            gpa_loss=gpa_loss,
            hpm_loss=hpm_loss,
            logits=logits,
            gpa_logits=gpa_logits,
            predicted_losses=predicted_losses,
            mask=mask,
            ids_restore=ids_restore,
            gpa=gpa,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def decoder_input(
    decoder: ViTMAEDecoder, latent: torch.Tensor, ids_restore: torch.Tensor | None, interpolate_pos_encoding: bool
) -> torch.Tensor:
    """(B, 1+len_keep, D) latent -> (B, 1+n, D_dec) decoder input tokens in patch order, CLS first.

    Adapted from ``ViTMAEDecoder.forward`` up to its blocks: embed, mask tokens where patches were dropped (none when
    ``ids_restore`` is None: the latent is the full image in patch order), unshuffle, position table.
    """
    hidden_states = decoder.decoder_embed(latent)
    if ids_restore is not None:
        num_masked = ids_restore.shape[1] + 1 - hidden_states.shape[1]
        mask_tokens = decoder.mask_token.expand(hidden_states.shape[0], num_masked, -1)
        tokens = torch.cat([hidden_states[:, 1:], mask_tokens], dim=1)
        index = ids_restore.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        hidden_states = torch.cat([hidden_states[:, :1], torch.gather(tokens, dim=1, index=index)], dim=1)
    if interpolate_pos_encoding:
        return hidden_states + decoder.interpolate_pos_encoding(hidden_states)
    return hidden_states + decoder.decoder_pos_embed


def decoder_blocks(decoder: ViTMAEDecoder, tokens: torch.Tensor) -> torch.Tensor:
    """(B, 1+n, D_dec) input tokens -> (B, 1+n, D_dec) hidden states after the blocks and ``decoder_norm``
    (``ViTMAEDecoder.forward`` before its prediction layer)."""
    for layer in decoder.decoder_layers:
        tokens = layer(tokens)
    return decoder.decoder_norm(tokens)


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


__all__ = [
    "GPAForPreTraining",
    "GPAForPreTrainingOutput",
    "GPAModel",
    "GPAForImageClassification",
    "GPABackbone",
    "HPMLossPredictor",
]
