import pytest
import torch

from modeling_gpa.block_masking import block_mask, block_noise
from modeling_gpa.masking import num_masked_patches


@pytest.mark.parametrize(
    "grid, len_mask, min_patches", [((7, 7), 37, 16), ((14, 14), 75, 16), ((14, 14), 147, 16), ((4, 6), 5, 2)]
)
def test_counts_are_exact_and_masks_are_unions_of_rectangles_within_the_aspect_range(grid, len_mask, min_patches):
    rows, columns = grid
    generator = torch.Generator().manual_seed(0)
    masked, rectangles, singles = block_mask(64, grid, len_mask, min_patches=min_patches, generator=generator)
    assert masked.shape == (64, rows * columns) and (masked.sum(1) == len_mask).all()
    row = torch.arange(rows).view(1, rows, 1)
    column = torch.arange(columns).view(1, 1, columns)
    union = singles.view(64, rows, columns).clone()
    for added_in_round in rectangles:
        top, left, height, width = added_in_round.unbind(-1)
        added = height > 0
        # Every rectangle kept is BEiT's: at least one patch narrower than the grid, aspect within [0.3, 1 / 0.3].
        assert ((height[added] < rows) & (width[added] < columns)).all()
        ratio = height[added] / width[added]
        assert ((ratio >= 0.3) & (ratio <= 1 / 0.3)).all()
        inside = (row >= top.view(-1, 1, 1)) & (row < (top + height).view(-1, 1, 1))
        inside = inside & (column >= left.view(-1, 1, 1)) & (column < (left + width).view(-1, 1, 1))
        union |= inside
    assert torch.equal(union.flatten(1), masked)
    # The 1x1 completions are the exception, not the rule.
    assert singles.sum() <= 0.1 * masked.sum()


def test_noise_drops_exactly_the_block_mask_and_is_reproducible():
    noise = block_noise(8, (7, 7), 0.75, generator=torch.Generator().manual_seed(1))
    again = block_noise(8, (7, 7), 0.75, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noise, again)
    assert ((noise >= 1).sum(1) == num_masked_patches(49, 0.75)).all()


def test_a_count_beyond_the_grid_is_refused():
    with pytest.raises(ValueError, match="len_mask=50"):
        block_mask(2, (7, 7), 50)
