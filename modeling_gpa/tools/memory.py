"""Analytic parameter counts of GPA models and the memory their training state takes per GPU under each engine.

Counts follow the modules exactly (tested against ``GPAForPreTraining``). Memory is the model state alone: weights,
gradients, AdamW's two moments and the teacher; activations (which depend on the batch and on activation
checkpointing) and the framework's buffers come on top. Per engine, with ``P`` trained parameters, ``T`` teacher
parameters and ``N`` GPUs, in bytes:

- ``ddp`` (``multi_gpu_bf16.yaml``): fp32 weights, gradients and moments on every GPU, ``16 P``; the teacher in fp32,
  ``4 T`` (bf16 autocast computes in bf16 but keeps fp32 weights, so EMA steps of ``1 - momentum`` are not lost).
- ``fsdp`` (``fsdp.yaml``): all of that sharded, ``(16 P + 4 T) / N``, plus the gathered bf16 weights of the unit
  running at the time (one block, ``block_parameters``, twice with prefetching).
- ``deepspeed_zero2`` (``deepspeed_zero2.yaml``): bf16 weights on every GPU, ``2 P``, and the teacher's, ``2 T``
  (DeepSpeed casts the whole module, teacher included); bf16 gradients, fp32 master weights and moments sharded,
  ``(2 + 4 + 8) P / N``.

Run ``python -m modeling_gpa.tools.memory`` for the table in docs/distributed.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig, ViTMAEConfig

from ..configuration_gpa import GPAConfig, pair
from .flops import num_patches

ENGINES = ("ddp", "fsdp", "deepspeed_zero2")
GIB = 2**30


def linear_parameters(in_features: int, out_features: int) -> int:
    return in_features * out_features + out_features


def block_parameters(hidden_size: int, intermediate_size: int) -> int:
    """One ViT block: two LayerNorms, Q/K/V/output projections, two-layer MLP."""
    attention = 4 * linear_parameters(hidden_size, hidden_size)
    mlp = linear_parameters(hidden_size, intermediate_size) + linear_parameters(intermediate_size, hidden_size)
    return 2 * 2 * hidden_size + attention + mlp


def position_table_parameters(config: PretrainedConfig, width: int) -> int:
    """A fixed (untrained) sin-cos table of CLS + every patch."""
    return (1 + num_patches(config)) * width


def encoder_parameters(config: PretrainedConfig) -> int:
    """A ``ViTMAEModel`` / ``ViTModel`` without pooler: patch projection, CLS, position table, blocks, final norm."""
    patch_height, patch_width = pair(config.patch_size)
    hidden = config.hidden_size
    patch_projection = linear_parameters(config.num_channels * patch_height * patch_width, hidden)
    blocks = config.num_hidden_layers * block_parameters(hidden, config.intermediate_size)
    return patch_projection + hidden + position_table_parameters(config, hidden) + blocks + 2 * hidden


def decoder_parameters(config: ViTMAEConfig, num_layers: int | None = None, out_features: int | None = None) -> int:
    """A ``ViTMAEDecoder``: embedding, mask token, position table, ``num_layers`` blocks, norm, prediction layer."""
    num_layers = config.decoder_num_hidden_layers if num_layers is None else num_layers
    if out_features is None:
        patch_height, patch_width = pair(config.patch_size)
        out_features = config.num_channels * patch_height * patch_width
    width = config.decoder_hidden_size
    blocks = num_layers * block_parameters(width, config.decoder_intermediate_size)
    embed = linear_parameters(config.hidden_size, width)
    return (
        embed
        + width
        + position_table_parameters(config, width)
        + blocks
        + 2 * width
        + linear_parameters(width, out_features)
    )


def mam_parameters(config: GPAConfig) -> int:
    """The Masked Attention Modeling head: a linear layer, or a decoder of its own."""
    if not config.gpa_prediction:
        return 0
    if config.gpa_decoder_layers == 0:
        return linear_parameters(config.decoder_hidden_size, 1)
    return decoder_parameters(config, num_layers=config.gpa_decoder_layers, out_features=1)


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of a ``GPAForPreTraining``: the trained ones (encoder, decoder, MAM head) and the teacher's."""

    trained: int
    frozen: int
    teacher: int

    @property
    def total(self) -> int:
        return self.trained + self.frozen + self.teacher


def parameter_counts(config: GPAConfig, teacher_config: PretrainedConfig | None = None) -> ParameterCounts:
    """Counts of ``GPAForPreTraining(config)``; ``teacher_config`` is a ``"pretrained"`` teacher's configuration."""
    frozen = position_table_parameters(config, config.hidden_size) + position_table_parameters(
        config, config.decoder_hidden_size
    )
    if config.gpa_prediction and config.gpa_decoder_layers:
        frozen += position_table_parameters(config, config.decoder_hidden_size)
    everything = encoder_parameters(config) + decoder_parameters(config) + mam_parameters(config)
    teacher = 0
    if config.gpa_teacher == "ema":
        teacher = encoder_parameters(config)
    elif config.gpa_teacher == "pretrained":
        if teacher_config is None:
            raise ValueError("parameter_counts needs the pretrained teacher's configuration: pass teacher_config.")
        teacher = encoder_parameters(teacher_config)
    return ParameterCounts(trained=everything - frozen, frozen=frozen, teacher=teacher)


@dataclass(frozen=True)
class ModelStateMemory:
    """Bytes of training state per GPU: weights, gradients, optimizer and teacher."""

    weights: float
    gradients: float
    optimizer: float
    teacher: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.teacher


def model_state_memory(counts: ParameterCounts, engine: str, world_size: int) -> ModelStateMemory:
    """Per-GPU bytes of the model state of ``counts`` under ``engine`` on ``world_size`` GPUs (see the module doc)."""
    trained, weights_only, teacher = counts.trained, counts.frozen, counts.teacher
    if engine == "ddp":
        return ModelStateMemory(4 * (trained + weights_only), 4 * trained, 8 * trained, 4 * teacher)
    if engine == "fsdp":
        shards = world_size
        return ModelStateMemory(
            4 * (trained + weights_only) / shards, 4 * trained / shards, 8 * trained / shards, 4 * teacher / shards
        )
    if engine == "deepspeed_zero2":
        return ModelStateMemory(
            2 * (trained + weights_only) + 4 * trained / world_size,
            2 * trained / world_size,
            8 * trained / world_size,
            2 * teacher,
        )
    raise ValueError(f"engine={engine!r} is invalid; allowed values: {', '.join(ENGINES)}.")


# MAE's ViT-B/16, L/16 and H/14 at 224 px with MAE's decoder (512 wide, 8 blocks) and a linear MAM head.
VIT_SIZES = {
    "ViT-B/16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "ViT-L/16": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "ViT-H/14": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
}


def vit_config(name: str, **overrides) -> GPAConfig:
    """The GPA configuration of one of ``VIT_SIZES`` (MAE's decoder, MAM on)."""
    return GPAConfig(image_size=224, patch_size=int(name.rsplit("/", 1)[1]), **VIT_SIZES[name], **overrides)


def memory_table(world_size: int = 8) -> str:
    """Markdown table: per-GPU model-state GiB of each ViT size with an EMA teacher (or a pretrained MAE of the same
    size, which counts the same) under each engine on ``world_size`` GPUs."""
    lines = [
        f"| model | trained + teacher parameters | ddp | fsdp ({world_size} GPUs) | deepspeed_zero2 "
        f"({world_size} GPUs) |",
        "|---|---|---|---|---|",
    ]
    for name in VIT_SIZES:
        counts = parameter_counts(vit_config(name, gpa_teacher="ema"))
        cells = [f"{model_state_memory(counts, engine, world_size).total / GIB:.2f} GiB" for engine in ENGINES]
        lines.append(f"| {name} | {counts.trained / 1e6:.1f}M + {counts.teacher / 1e6:.1f}M | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(memory_table())
