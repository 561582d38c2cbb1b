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
