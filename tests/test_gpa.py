import pytest
import torch

from modeling_gpa.gpa import global_patch_attention, loss_patch_weights, minmax_normalize, zscore_normalize


def brute_force(query, key, head, score, queries):
    """Materialises the n x n matrix: sum over the chosen queries of each patch key's logit or probability."""
    query, key = query.double(), key.double()
    logits = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
    values = logits if score == "logits" else logits.softmax(dim=-1)
    batch, heads, tokens, _ = values.shape
    result = torch.zeros(batch, heads, tokens - 1, dtype=torch.float64)
    for m in range(1, tokens):
        rows = range(tokens) if queries == "all" else [i for i in range(1, tokens) if i != m]
        result[:, :, m - 1] = values[:, :, list(rows), m].sum(dim=-1)
    return result.sum(dim=1) if head is None else result[:, head]


@pytest.mark.parametrize("score", ["logits", "softmax"])
@pytest.mark.parametrize("queries", ["all", "others"])
@pytest.mark.parametrize("head", [0, 2, -1, None])
def test_matches_brute_force(score, queries, head):
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 2, 4, 17, 8, generator=generator)
    expected = brute_force(query, key, head, score, queries)
    actual = global_patch_attention(query, key, head=head, score=score, queries=queries)
    assert actual.shape == (2, 16) and actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-4)


def test_low_precision_input_is_scored_in_float32():
    generator = torch.Generator().manual_seed(1)
    query, key = torch.randn(2, 1, 2, 197, 64, generator=generator)
    exact = global_patch_attention(query, key)
    half = global_patch_attention(query.bfloat16(), key.bfloat16())
    assert half.dtype == torch.float32
    # Only the rounding of the bf16 inputs remains: the ranking of patches is nearly unchanged.
    top_exact, top_half = exact.topk(20).indices, half.topk(20).indices
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_exact, top_half, strict=True)])
    assert overlap.float().mean() >= 18


def test_logits_score_never_builds_the_n_by_n_matrix(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("matmul called")

    query, key = torch.randn(2, 1, 3, 50, 8)
    monkeypatch.setattr(torch, "matmul", forbidden)
    monkeypatch.setattr(torch.Tensor, "__matmul__", forbidden)
    assert global_patch_attention(query, key, head=None).shape == (1, 49)


def test_normalisations_are_per_image_and_finite_on_constant_scores():
    score = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]])
    normalized = minmax_normalize(score)
    torch.testing.assert_close(normalized[0], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(normalized[1], torch.ones(3))
    standardized = zscore_normalize(score)
    torch.testing.assert_close(standardized[0].mean(), torch.tensor(0.0))
    torch.testing.assert_close(standardized[0].pow(2).mean(), torch.tensor(1.0))
    assert torch.equal(standardized[1], torch.zeros(3))


def test_released_zscore_uses_the_unbiased_variance_plus_epsilon():
    score = torch.tensor([[1.0, 2.0, 6.0]])
    # mean 3, squared deviations 4 + 1 + 9 = 14: unbiased variance 14 / 2 = 7, population variance 14 / 3.
    released = zscore_normalize(score, "released")
    torch.testing.assert_close(released, torch.tensor([[-2.0, -1.0, 3.0]]) / (7.0 + 1e-6) ** 0.5)
    torch.testing.assert_close(zscore_normalize(score), torch.tensor([[-2.0, -1.0, 3.0]]) / (14.0 / 3) ** 0.5)
    assert torch.equal(zscore_normalize(torch.full((1, 4), 2.0), "released"), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="variance='sample' is invalid"):
        zscore_normalize(score, "sample")


def test_loss_patch_weights_select_masked_all_or_visible_patches():
    mask = torch.tensor([[1, 0, 1, 0]])
    torch.testing.assert_close(loss_patch_weights(mask, "masked"), torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
    torch.testing.assert_close(loss_patch_weights(mask, "all"), torch.ones(1, 4))
    torch.testing.assert_close(loss_patch_weights(mask, "visible"), torch.tensor([[0.0, 1.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="patches='kept' is invalid"):
        loss_patch_weights(mask, "kept")


def test_rejects_mismatched_shapes_and_unknown_options():
    with pytest.raises(ValueError, match="query and key"):
        global_patch_attention(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 6, 4))
    with pytest.raises(ValueError, match="score"):
        global_patch_attention(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4), score="cosine")
