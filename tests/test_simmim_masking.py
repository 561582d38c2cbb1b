import itertools

import numpy as np
import pytest
import torch

from modeling_gpa.masking import HARD, KEPT, SOFT, MaskSchedule, mask_fractions
from modeling_gpa.simmim.masking import (
    area_pool_matrix,
    check_mask_geometry,
    expand_to_model_grid,
    pool_scores,
    random_bool_masked_pos,
    scheduled_bool_masked_pos,
    scheduled_mask_patch_groups,
    simmim_mask_count,
)


def geometries():
    """Every (image, mask patch, model patch) that run_mim.py's MaskGenerator allows, for a few image sizes."""
    for image_size in (32, 64, 96, 128, 192):
        for mask_patch in range(1, image_size + 1):
            if image_size % mask_patch or image_size // mask_patch > 16:
                continue
            for model_patch in range(1, mask_patch + 1):
                if mask_patch % model_patch == 0 and image_size // model_patch <= 64:
                    yield image_size, mask_patch, model_patch


def blocks_constant(bool_masked_pos, image_size, mask_patch, model_patch):
    """Each mask patch's scale x scale block of model patches is all masked or all visible."""
    side, scale = image_size // model_patch, mask_patch // model_patch
    grid = bool_masked_pos.view(-1, side // scale, scale, side // scale, scale)
    return bool((grid == grid[:, :, :1, :, :1]).all())


def test_mask_count_is_run_mims():
    for token_count, ratio in itertools.product(range(1, 65), (0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.9)):
        assert simmim_mask_count(token_count, ratio) == int(np.ceil(token_count * ratio))


@pytest.mark.parametrize("mask_ratio", [0.6, 0.75, 0.7])
def test_counts_exact_for_every_geometry(mask_ratio):
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for image_size, mask_patch, model_patch in geometries():
        mask_grid = image_size // mask_patch
        count = simmim_mask_count(mask_grid**2, mask_ratio)
        teacher_grid = image_size // 16 if image_size >= 32 else 2
        scores = torch.randn(3, teacher_grid**2, generator=generator)
        for progress in (0.0, 0.4, 1.0):
            geometry = dict(image_size=image_size, mask_patch_size=mask_patch, model_patch_size=model_patch)
            groups = scheduled_mask_patch_groups(
                scores, mask_ratio=mask_ratio, progress=progress, generator=generator, **geometry
            )
            hard_fraction, soft_fraction, _ = mask_fractions(progress)
            num_hard = min(int(count * hard_fraction), count)
            num_soft = min(int(count * soft_fraction), count - num_hard)
            assert ((groups != KEPT).sum(1) == count).all()
            assert ((groups == HARD).sum(1) == num_hard).all() and ((groups == SOFT).sum(1) == num_soft).all()
            masked = scheduled_bool_masked_pos(
                scores, mask_ratio=mask_ratio, progress=progress, generator=generator, **geometry
            )
            assert masked.shape == (3, (image_size // model_patch) ** 2) and masked.dtype == torch.bool
            assert (masked.sum(1) == count * (mask_patch // model_patch) ** 2).all()
            assert blocks_constant(masked, image_size, mask_patch, model_patch)
        checked += 1
    assert checked > 40


def test_soft_and_hard_counts_follow_eq6():
    scores = torch.randn(4, 64)
    # 64 px, mask patch 16: 16 mask patches, ceil(16 * 0.75) = 12 masked.
    for progress, hard, soft in ((0.0, 0, 6), (0.5, 3, 3), (1.0, 6, 0)):
        groups = scheduled_mask_patch_groups(
            scores, image_size=64, mask_patch_size=16, model_patch_size=4, mask_ratio=0.75, progress=progress
        )
        assert ((groups == HARD).sum(1) == hard).all() and ((groups == SOFT).sum(1) == soft).all()
        assert ((groups != KEPT).sum(1) == 12).all()


def test_hard_set_is_top_pooled_mask_patches():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(5, 16 * 16, generator=generator)
    pooled = pool_scores(scores, 4)
    groups = scheduled_mask_patch_groups(
        scores,
        image_size=128,
        mask_patch_size=32,
        model_patch_size=4,
        mask_ratio=0.6,
        progress=1.0,
        schedule=MaskSchedule(1.0, 1.0, 0.0, 0.0),
        generator=generator,
    )
    count = simmim_mask_count(16, 0.6)
    top = pooled.topk(count, dim=1).indices
    expected = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, top, True)
    assert torch.equal(groups == HARD, expected)
    default = scheduled_mask_patch_groups(
        scores, image_size=128, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6, progress=1.0
    )
    hard = default == HARD
    assert (hard.sum(1) == count // 2).all()
    lowest_hard = pooled.masked_fill(~hard, float("inf")).amin(1)
    highest_other = pooled.masked_fill(hard, float("-inf")).amax(1)
    assert (lowest_hard > highest_other).all()


def test_pooling_by_hand():
    # Finer teacher: 4x4 -> 2x2 is the mean of each 2x2 block.
    scores = torch.arange(16.0).view(1, 16)
    assert pool_scores(scores, 2).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    # Coarser teacher: 2x2 -> 4x4 copies each teacher patch to the mask patches it covers.
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    expected = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], dtype=torch.float32)
    assert torch.equal(pool_scores(scores, 4), expected.view(1, 16))
    # Neither divides: 3 cells -> 2 cells, cell 0 covers [0, 1.5): weights 2/3, 1/3.
    assert torch.allclose(area_pool_matrix(3, 2), torch.tensor([[2 / 3, 1 / 3, 0.0], [0.0, 1 / 3, 2 / 3]]).double())
    scores = torch.tensor([[0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0]])  # row-major 3x3, value 3*(3r+c)
    # Output (0,0): weights (2/3, 1/3) on rows and columns: 3 * (3 * 1/3 + 1/3) = 4.
    assert torch.allclose(pool_scores(scores, 2), torch.tensor([[4.0, 8.0, 16.0, 20.0]]))
    # Rows of the weights sum to one for any pair of grid sizes.
    for source, target in itertools.product(range(1, 9), repeat=2):
        assert torch.allclose(area_pool_matrix(source, target).sum(1), torch.ones(target, dtype=torch.float64))


def test_expand_repeats_each_mask_patch():
    mask = torch.tensor([[True, False, False, True]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(expand_to_model_grid(mask, 2), expected.view(1, 16))


def test_blank_image_gives_exact_counts_and_random_tie_break():
    scores = torch.full((64, 64), 3.0)
    masked = scheduled_bool_masked_pos(
        scores,
        image_size=64,
        mask_patch_size=16,
        model_patch_size=8,
        mask_ratio=0.6,
        progress=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert (masked.sum(1) == 10 * 4).all()
    # Ties broken at random: the hard set is not always the first mask patches.
    assert len({tuple(row.tolist()) for row in masked}) > 32


def test_generator_reproducible():
    scores = torch.randn(4, 64)
    kwargs = dict(image_size=64, mask_patch_size=16, model_patch_size=4, mask_ratio=0.6, progress=0.3)
    first = scheduled_bool_masked_pos(scores, generator=torch.Generator().manual_seed(7), **kwargs)
    again = scheduled_bool_masked_pos(scores, generator=torch.Generator().manual_seed(7), **kwargs)
    other = scheduled_bool_masked_pos(scores, generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(first, again) and not torch.equal(first, other)
    geometry = dict(image_size=64, mask_patch_size=16, model_patch_size=4, mask_ratio=0.6)
    assert torch.equal(
        random_bool_masked_pos(4, generator=torch.Generator().manual_seed(3), **geometry),
        random_bool_masked_pos(4, generator=torch.Generator().manual_seed(3), **geometry),
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image_size=30, mask_patch_size=8, model_patch_size=4), "mask_patch_size"),
        (dict(image_size=32, mask_patch_size=8, model_patch_size=3), "mask_patch_size"),
        (dict(image_size=32, mask_patch_size=0, model_patch_size=4), "mask_patch_size"),
        (dict(image_size=32.0, mask_patch_size=8, model_patch_size=4), "image_size"),
        (dict(image_size=32, mask_patch_size=8, model_patch_size=4, mask_ratio=1.0), "mask_ratio"),
        (dict(image_size=32, mask_patch_size=8, model_patch_size=4, mask_ratio=0.0), "mask_ratio"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, name):
    kwargs = {"mask_ratio": 0.6, **kwargs}
    with pytest.raises(ValueError, match=name) as error:
        scheduled_bool_masked_pos(torch.randn(2, 16), progress=0.0, **kwargs)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=name):
        random_bool_masked_pos(2, **kwargs)


def test_scores_must_be_a_square_batch():
    with pytest.raises(ValueError, match="square"):
        pool_scores(torch.randn(2, 15), 2)
    with pytest.raises(ValueError, match="scores"):
        pool_scores(torch.randn(15), 2)
    check_mask_geometry(192, 32, 4)


def test_random_mask_matches_run_mim_statistics():
    """run_mim.py: ceil(n * r) uniform mask patches per image (a uniform random subset), repeated to the model grid."""
    image_size, mask_patch, model_patch, ratio = 192, 32, 4, 0.6
    token_count = (image_size // mask_patch) ** 2
    count = int(np.ceil(token_count * ratio))
    draws = 4000
    masked = random_bool_masked_pos(
        draws,
        image_size=image_size,
        mask_patch_size=mask_patch,
        model_patch_size=model_patch,
        mask_ratio=ratio,
        generator=torch.Generator().manual_seed(0),
    )
    assert (masked.sum(1) == count * (mask_patch // model_patch) ** 2).all()
    assert blocks_constant(masked, image_size, mask_patch, model_patch)
    scale = mask_patch // model_patch
    per_mask_patch = masked.view(draws, 6, scale, 6, scale)[:, :, 0, :, 0].reshape(draws, token_count).float()
    # Each mask patch is masked with probability count / n; each pair with count (count - 1) / (n (n - 1)).
    frequency = per_mask_patch.mean(0)
    tolerance = 4 * (count / token_count * (1 - count / token_count) / draws) ** 0.5
    assert (frequency - count / token_count).abs().max() < tolerance
    pairs = (per_mask_patch.T @ per_mask_patch / draws)[~torch.eye(token_count, dtype=torch.bool)]
    expected_pair = count * (count - 1) / (token_count * (token_count - 1))
    assert (pairs - expected_pair).abs().max() < 4 * (expected_pair * (1 - expected_pair) / draws) ** 0.5
