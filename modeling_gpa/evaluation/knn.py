"""Weighted k-NN classification on frozen features (DINO's protocol)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .features import check_features, check_labels
from .metric_loading import load_metric


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> torch.Tensor:
    """DINO's weighted k-NN: (N, D) bank, (N,) labels, (Q, D) queries -> (Q, num_classes) vote sums.

    Features are L2-normalised; each of a query's ``k`` most cosine-similar bank entries votes ``exp(sim / T)``
    for its class. One matmul per query batch, no per-image loop.
    """
    check_features(train_features, query_features)
    check_labels(train_labels, num_classes)
    k = min(k, train_features.shape[0])
    bank = F.normalize(train_features.float(), dim=1)
    bank_labels = train_labels.long().to(bank.device)
    scores = []
    for queries in query_features.float().split(batch_size):
        similarity = F.normalize(queries.to(bank.device), dim=1) @ bank.T
        top_similarity, top_index = similarity.topk(k, dim=1)
        votes = torch.zeros(queries.shape[0], num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[top_index], (top_similarity / temperature).exp())
        scores.append(votes.cpu())
    return torch.cat(scores)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Top-1 and top-5 (capped at ``num_classes``) accuracy of :func:`knn_scores` on labelled queries."""
    scores = knn_scores(train_features, train_labels, query_features, num_classes, k=k, temperature=temperature)
    ks = sorted({1, min(5, num_classes)})
    return load_metric("top_k_accuracy").compute(predictions=scores.numpy(), references=query_labels.numpy(), k=ks)
