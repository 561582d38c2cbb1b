"""The CLS-to-patch attention score (AttMask, SemMAE, AutoMAE, AMT): the CLS query's row of one block.

Adapted from AttMask (gkakogeorgiou/attmask, ``attmask.py``), whose score is the last block's CLS attention over
the patch keys, mean over heads. Beside GPA's column sum over every query (``gpa.global_patch_attention``) it is the
contrast of the paper's Figure 1: one query row against all of them. Here it is a second score for the same
teacher, block/head choice, Eq. 6 schedule and counts (``mask_method="cls_attention"``); only the score differs.
One query costs O(n d): the n x n matrix is never built.
"""

from __future__ import annotations

import torch

from .gpa import heads_of


def cls_patch_attention(
    query: torch.Tensor, key: torch.Tensor, *, head: int | None = -1, score: str = "softmax"
) -> torch.Tensor:
    """Attention of the CLS query to every patch key.

    Args:
        query: (B, H, 1+n, d) queries of one block, CLS at index 0.
        key: (B, H, 1+n, d) keys of the same block.
        head: head to read (negative counts from the end), or ``None`` for the mean over heads (AttMask's).
        score: ``"softmax"`` (attention probabilities, AttMask's) or ``"logits"`` (pre-softmax ``q.k/sqrt(d)``).

    Returns:
        (B, n) float32 scores of the n patch keys (the CLS key's own share is dropped).
    """
    query, key = heads_of(query, key, head, score)
    with torch.autocast(device_type=query.device.type, enabled=False):
        cls_query = query[:, :, :1].float()
        logits = (cls_query @ key.float().transpose(-1, -2)).squeeze(2) * query.shape[-1] ** -0.5
        per_head = logits.softmax(dim=-1) if score == "softmax" else logits
        return per_head[:, :, 1:].mean(dim=1)


__all__ = ["cls_patch_attention"]
