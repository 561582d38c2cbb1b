"""The Global Patch-wise Attention score and its per-image normalisations.

The score of patch ``m`` is the attention that the queries of one block pay to its key:
``GPA_m = sum_i q_i . k_m / sqrt(d)``. Since the logits are linear in ``q``, the sum over queries
collapses to ``(sum_i q_i) . k_m``: the exact score costs O(n·d), never the n×n matrix.
"""

from __future__ import annotations

import torch

EPS = 1e-6


def global_patch_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    head: int | None = -1,
    score: str = "logits",
    queries: str = "all",
) -> torch.Tensor:
    """Raw GPA score of every patch, summed over queries.

    Args:
        query: (B, H, 1+n, d) queries of one block, CLS at index 0.
        key: (B, H, 1+n, d) keys of the same block.
        head: head to read (negative counts from the end), or ``None`` for the sum over all heads.
        score: ``"logits"`` (pre-softmax ``q.k/sqrt(d)``, O(n·d)) or ``"softmax"`` (attention probabilities,
            which need each query's normaliser and so the n×n matrix of the chosen head(s)).
        queries: ``"all"`` (every query, CLS and the patch itself included) or ``"others"`` (the other
            patches only: no CLS query, no self term).

    Returns:
        (B, n) float32 scores of the n patch keys (the CLS key is dropped), unnormalised.
    """
    if queries not in ("all", "others"):
        raise ValueError(f"queries={queries!r} is invalid; allowed values: 'all', 'others'.")
    query, key = heads_of(query, key, head, score)
    # The sums run over hundreds of queries: bf16/fp16 would lose the ranking, so accumulate in float32.
    with torch.autocast(device_type=query.device.type, enabled=False):
        query, key = query.float(), key.float()
        scale = query.shape[-1] ** -0.5
        if score == "logits":
            patch_keys = key[:, :, 1:]
            if queries == "all":
                query_sum = query.sum(dim=2, keepdim=True)
                per_head = (query_sum * patch_keys).sum(dim=-1)
            else:
                patch_queries = query[:, :, 1:]
                others = patch_queries.sum(dim=2, keepdim=True) - patch_queries
                per_head = (others * patch_keys).sum(dim=-1)
            per_head = per_head * scale
        else:
            probabilities = torch.softmax(torch.matmul(query, key.transpose(-1, -2)) * scale, dim=-1)
            if queries == "all":
                per_head = probabilities[:, :, :, 1:].sum(dim=2)
            else:
                patch_block = probabilities[:, :, 1:, 1:]
                per_head = patch_block.sum(dim=2) - patch_block.diagonal(dim1=-2, dim2=-1)
        return per_head.sum(dim=1)


def heads_of(query: torch.Tensor, key: torch.Tensor, head: int | None, score: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks (B, H, 1+n, d) queries and keys and a score name; returns the (B, 1, 1+n, d) slices of ``head``, or
    all heads when it is ``None``."""
    if query.shape != key.shape or query.dim() != 4:
        raise ValueError(f"query and key must both be (B, H, 1+n, d); got {tuple(query.shape)} and {tuple(key.shape)}.")
    if score not in ("logits", "softmax"):
        raise ValueError(f"score={score!r} is invalid; allowed values: 'logits', 'softmax'.")
    if head is None:
        return query, key
    end = head + 1 if head != -1 else None
    return query[:, head:end], key[:, head:end]


def minmax_normalize(score: torch.Tensor) -> torch.Tensor:
    """(B, n) -> (B, n) in [0, 1] per image; a constant row (blank image) becomes all ones, never NaN."""
    score = score.float()
    low = score.amin(dim=-1, keepdim=True)
    span = score.amax(dim=-1, keepdim=True) - low
    flat = span <= EPS * score.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    normalized = (score - low) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.ones_like(normalized), normalized)


def zscore_normalize(score: torch.Tensor, variance: str = "population") -> torch.Tensor:
    """(B, n) -> (B, n) z-scored per image; a constant row becomes all zeros.

    ``variance="population"``: ``(x - mean) / max(std, 1e-6)``, std over the n patches (zero mean, unit variance).
    ``variance="released"``: ``(x - mean) / sqrt(var + 1e-6)`` with the unbiased (n - 1) variance, as the released
    code normalises its MAM target.
    """
    score = score.float()
    centred = score - score.mean(dim=-1, keepdim=True)
    if variance == "population":
        std = centred.pow(2).mean(dim=-1, keepdim=True).sqrt()
        return centred / std.clamp_min(EPS)
    if variance == "released":
        return centred / (score.var(dim=-1, keepdim=True, unbiased=True) + EPS).sqrt()
    raise ValueError(f"variance={variance!r} is invalid; allowed values: 'population', 'released'.")


def loss_patch_weights(mask: torch.Tensor, patches: str) -> torch.Tensor:
    """(B, n) mask (1 = masked) -> (B, n) float weights of the patches a loss averages over.

    ``patches``: ``"masked"`` (the mask itself), ``"all"`` (ones) or ``"visible"`` (``1 - mask``).
    """
    mask = mask.float()
    if patches == "masked":
        return mask
    if patches == "all":
        return torch.ones_like(mask)
    if patches == "visible":
        return 1.0 - mask
    raise ValueError(f"patches={patches!r} is invalid; allowed values: 'masked', 'all', 'visible'.")


__all__ = ["global_patch_attention", "heads_of", "loss_patch_weights", "minmax_normalize", "zscore_normalize"]
