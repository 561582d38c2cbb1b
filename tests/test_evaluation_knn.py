"""Weighted k-NN on frozen features."""

import math

import pytest
import torch

from modeling_gpa.evaluation import (
    knn_accuracy,
    knn_scores,
)


def test_knn_scores_sum_temperature_weighted_votes():
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[2.0, 0.0]])  # cosine similarities 1.0, 0.8, 0.0, -1.0
    scores = knn_scores(bank, labels, query, num_classes=3, k=2, temperature=0.5)
    torch.testing.assert_close(scores, torch.tensor([[math.exp(2.0), math.exp(1.6), 0.0]]))
    # k above the bank size uses the whole bank.
    everything = knn_scores(bank, labels, query, num_classes=3, k=10, temperature=0.5)
    torch.testing.assert_close(everything[0, 2], torch.tensor(math.exp(-2.0)))


def test_knn_scores_do_not_depend_on_the_query_batch_size():
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(50, 8, generator=generator), torch.randn(13, 8, generator=generator)
    labels = torch.randint(0, 4, (50,), generator=generator)
    one = knn_scores(bank, labels, queries, 4, k=5, batch_size=1)
    torch.testing.assert_close(one, knn_scores(bank, labels, queries, 4, k=5, batch_size=64))
    accuracy = knn_accuracy(bank, labels, bank, labels, 4, k=1)
    assert accuracy == {"top1_accuracy": 1.0, "top4_accuracy": 1.0}  # top-5 capped at the 4 classes


def test_knn_rejects_mismatched_features_and_bad_labels():
    with pytest.raises(ValueError, match="Feature dimension mismatch"):
        knn_scores(torch.randn(4, 8), torch.zeros(4, dtype=torch.long), torch.randn(2, 6), 2)
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        knn_scores(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]), torch.randn(2, 8), 2)
