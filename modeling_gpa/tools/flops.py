"""Analytic matmul FLOPs of MAE and GPA training steps, as functions of the model configuration.

Every matmul counts ``2 * m * n * k``: the patch-embedding convolution, the linear layers, and attention's
``QK^T`` and ``AV``. LayerNorm, softmax, GELU, the losses, the mask sampling, the EMA update and the optimizer are
left out: they are memory-bound and small next to the matmuls. A training step is the forward and backward of the
student (encoder on the kept tokens, pixel decoder, MAM head), counted as 3x their forward, plus the teacher's
forward alone: blocks ``0..b-1`` on the full image and, in block ``b``, its Q/K projections and the score.
All counts are per image.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, PretrainedConfig

from ..configuration_gpa import GPAConfig, pair


@dataclass(frozen=True)
class StepFlops:
    """Forward matmul FLOPs per image of each part of a training step; ``total`` applies the 3x for training."""

    encoder: int
    decoder: int
    mam: int = 0
    teacher: int = 0

    @property
    def trained(self) -> int:
        """Forward FLOPs of the parts that get gradients."""
        return self.encoder + self.decoder + self.mam

    @property
    def total(self) -> int:
        """FLOPs of one training step per image: 3x the trained parts (forward + backward) plus the teacher."""
        return 3 * self.trained + self.teacher


def linear_flops(tokens: int, in_features: int, out_features: int) -> int:
    """A linear layer on ``tokens`` vectors."""
    return 2 * tokens * in_features * out_features


def attention_flops(tokens: int, width: int) -> int:
    """``QK^T`` and ``AV`` over all heads (``width = heads * head_dim``) for ``tokens`` queries and keys."""
    return 2 * linear_flops(tokens, tokens, width)


def block_flops(tokens: int, hidden_size: int, intermediate_size: int) -> int:
    """One pre-norm transformer block: Q, K, V, output projections, attention, two-layer MLP."""
    projections = 4 * linear_flops(tokens, hidden_size, hidden_size)
    mlp = linear_flops(tokens, hidden_size, intermediate_size) + linear_flops(tokens, intermediate_size, hidden_size)
    return projections + attention_flops(tokens, hidden_size) + mlp


def num_patches(config: PretrainedConfig, image_size: int | None = None) -> int:
    """Patches of an ``image_size`` square image (default: the configuration's image size)."""
    height, width = pair(config.image_size) if image_size is None else (image_size, image_size)
    patch_height, patch_width = pair(config.patch_size)
    return (height // patch_height) * (width // patch_width)


def patch_embedding_flops(config: PretrainedConfig, image_size: int | None = None) -> int:
    """The patch-embedding convolution: one ``C * p * p -> hidden`` linear map per patch."""
    patch_height, patch_width = pair(config.patch_size)
    patch_features = config.num_channels * patch_height * patch_width
    return linear_flops(num_patches(config, image_size), patch_features, config.hidden_size)


def kept_patches(config: PretrainedConfig) -> int:
    """Patches the MAE encoder sees: ``int(n * (1 - mask_ratio))``, as ``ViTMAEEmbeddings.random_masking``."""
    return int(num_patches(config) * (1 - config.mask_ratio))


def encoder_forward_flops(config: PretrainedConfig) -> int:
    """MAE encoder: patch embedding of every patch, then every block on CLS + kept patches."""
    tokens = 1 + kept_patches(config)
    blocks = config.num_hidden_layers * block_flops(tokens, config.hidden_size, config.intermediate_size)
    return patch_embedding_flops(config) + blocks


def decoder_forward_flops(
    config: PretrainedConfig, num_layers: int | None = None, out_features: int | None = None
) -> int:
    """MAE decoder: embedding of the kept tokens, ``num_layers`` blocks on CLS + all patches, prediction layer.

    ``out_features`` defaults to the pixels of a patch; the prediction layer runs on the CLS token too.
    """
    num_layers = config.decoder_num_hidden_layers if num_layers is None else num_layers
    if out_features is None:
        patch_height, patch_width = pair(config.patch_size)
        out_features = config.num_channels * patch_height * patch_width
    tokens = 1 + num_patches(config)
    embed = linear_flops(1 + kept_patches(config), config.hidden_size, config.decoder_hidden_size)
    blocks = num_layers * block_flops(tokens, config.decoder_hidden_size, config.decoder_intermediate_size)
    return embed + blocks + linear_flops(tokens, config.decoder_hidden_size, out_features)


def mam_forward_flops(config: GPAConfig) -> int:
    """Masked Attention Modeling head: a linear layer on the decoder output, or a decoder stack of its own."""
    if not config.gpa_prediction:
        return 0
    if config.gpa_decoder_layers == 0:
        return linear_flops(1 + num_patches(config), config.decoder_hidden_size, 1)
    return decoder_forward_flops(config, num_layers=config.gpa_decoder_layers, out_features=1)


def gpa_score_flops(patches: int, head_dim: int, heads: int, score: str = "logits") -> int:
    """The score from Q and K of ``heads`` heads: a mat-vec for ``"logits"``, the (1+n)^2 matrix for ``"softmax"``."""
    if score == "logits":
        return linear_flops(patches, head_dim, heads)
    return heads * linear_flops(1 + patches, head_dim, 1 + patches)


def teacher_forward_flops(
    teacher_config: PretrainedConfig,
    layer: int,
    *,
    head: int | None = -1,
    score: str = "logits",
    image_size: int | None = None,
) -> int:
    """Teacher forward on the full ``image_size`` image: blocks ``0..layer-1``, Q/K of block ``layer``, the score.

    ``layer`` is a non-negative block index; ``head=None`` scores every head.
    """
    patches = num_patches(teacher_config, image_size)
    tokens = 1 + patches
    hidden = teacher_config.hidden_size
    blocks = layer * block_flops(tokens, hidden, teacher_config.intermediate_size)
    query_key = 2 * linear_flops(tokens, hidden, hidden)
    heads = teacher_config.num_attention_heads
    scored = gpa_score_flops(patches, hidden // heads, heads if head is None else 1, score)
    return patch_embedding_flops(teacher_config, image_size) + blocks + query_key + scored


def full_forward_flops(config: PretrainedConfig, image_size: int | None = None) -> int:
    """Every block on the full image: the naive route that reads attention maps from a whole forward pass."""
    tokens = 1 + num_patches(config, image_size)
    blocks = config.num_hidden_layers * block_flops(tokens, config.hidden_size, config.intermediate_size)
    return patch_embedding_flops(config, image_size) + blocks


def mae_step_flops(config: PretrainedConfig) -> StepFlops:
    """One ``ViTMAEForPreTraining`` training step with random masking, per image."""
    return StepFlops(encoder=encoder_forward_flops(config), decoder=decoder_forward_flops(config))


def resolve_teacher_config(config: GPAConfig, teacher_config: PretrainedConfig | None = None) -> PretrainedConfig:
    """The teacher's configuration: the student's for ``"self"`` / ``"ema"``, else the given or the stored one."""
    if config.gpa_teacher != "pretrained":
        return config
    if teacher_config is not None:
        return teacher_config
    if config.gpa_teacher_config is None:
        raise ValueError(
            "gpa_step_flops needs the pretrained teacher's configuration: pass teacher_config, or a GPAConfig taken "
            "from a built GPAForPreTraining (it fills in gpa_teacher_config)."
        )
    return AutoConfig.for_model(**config.gpa_teacher_config)


def gpa_step_flops(config: GPAConfig, teacher_config: PretrainedConfig | None = None) -> StepFlops:
    """One ``GPAForPreTraining`` training step per image: MAE's, plus the MAM head and the teacher forward."""
    teacher_config = resolve_teacher_config(config, teacher_config)
    teacher = teacher_forward_flops(
        teacher_config,
        config.resolved_gpa_layer(teacher_config.num_hidden_layers),
        head=config.resolved_gpa_head(teacher_config.num_attention_heads),
        score=config.gpa_score,
        image_size=config.gpa_teacher_image_size,
    )
    mae = mae_step_flops(config)
    return StepFlops(encoder=mae.encoder, decoder=mae.decoder, mam=mam_forward_flops(config), teacher=teacher)


__all__ = [
    "StepFlops",
    "attention_flops",
    "block_flops",
    "decoder_forward_flops",
    "encoder_forward_flops",
    "full_forward_flops",
    "gpa_score_flops",
    "gpa_step_flops",
    "kept_patches",
    "linear_flops",
    "mae_step_flops",
    "mam_forward_flops",
    "num_patches",
    "patch_embedding_flops",
    "resolve_teacher_config",
    "teacher_forward_flops",
]
