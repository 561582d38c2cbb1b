"""Which weights of a module are NaN or inf: the check before a save, an evaluation or a teacher is used.

Plain torch, so the model and evaluation code that import it load where `datasets` and the Trainer stack do not.
"""

from __future__ import annotations

import torch
from torch import nn


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``module`` holding NaN or inf (one host sync)."""
    named = [
        (name, tensor)
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]
        if tensor.is_floating_point() and tensor.numel()
    ]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(tensor).all() for _, tensor in named]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


__all__ = ["nonfinite_tensors"]
