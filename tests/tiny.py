"""Small ViTMAE / GPA configurations shared by the tests: real modules, seconds on a CPU."""

from __future__ import annotations

TINY = dict(
    image_size=28,
    patch_size=4,
    num_channels=1,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    decoder_hidden_size=32,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=4,
    decoder_intermediate_size=64,
)


def tiny_kwargs(**overrides) -> dict:
    """TINY with ``overrides`` applied: 49 patches of 4x4 on a 28x28 single-channel image."""
    return {**TINY, **overrides}


def config_overrides(**overrides) -> str:
    """``--config_overrides`` for run_pretrain.py: the architecture of ``tiny_kwargs(**overrides)``.

    The image size and channels are left out: the script takes them from the data.
    """
    fields = tiny_kwargs(**overrides)
    return ",".join(f"{key}={value}" for key, value in fields.items() if key not in ("image_size", "num_channels"))
