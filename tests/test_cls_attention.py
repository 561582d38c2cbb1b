import pytest
import torch

from modeling_gpa.cls_attention import cls_patch_attention


@pytest.mark.parametrize("head", [None, 0, -1])
@pytest.mark.parametrize("score", ["softmax", "logits"])
def test_the_score_is_the_cls_row_of_the_attention_matrix(head, score):
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 3, 2, 10, 8, generator=generator)
    # Independent: the full (1+n) x (1+n) attention matrix of each head, its CLS row, the patch keys.
    logits = torch.einsum("bhqd,bhkd->bhqk", query, key) / 8**0.5
    matrix = logits.softmax(dim=-1) if score == "softmax" else logits
    row = matrix[:, :, 0, 1:]
    expected = row.mean(dim=1) if head is None else row[:, head]
    torch.testing.assert_close(cls_patch_attention(query, key, head=head, score=score), expected)


def test_bad_shapes_and_scores_are_refused():
    with pytest.raises(ValueError, match="score='max'"):
        cls_patch_attention(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), score="max")
    with pytest.raises(ValueError, match="query and key"):
        cls_patch_attention(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
