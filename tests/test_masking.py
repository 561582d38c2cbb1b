import pytest
import torch

from modeling_gpa.masking import HARD, KEPT, RANDOM, SOFT, gpa_mask_groups, gpa_noise, mask_counts, mask_fractions


def test_fractions_follow_eq6_linearly():
    assert mask_fractions(0.0) == (0.0, 0.5, 0.5)
    assert mask_fractions(1.0) == (0.5, 0.0, 0.5)
    hard, soft, random = mask_fractions(0.3)
    assert (hard, soft) == pytest.approx((0.15, 0.35))
    assert random == pytest.approx(0.5)
    assert mask_fractions(2.0) == mask_fractions(1.0)


def test_soft_is_clipped_so_hard_plus_soft_fit():
    hard, soft, random = mask_fractions(1.0, hard=(0.0, 0.8), soft=(0.0, 0.6))
    assert (hard, soft, random) == pytest.approx((0.8, 0.2, 0.0))


@pytest.mark.parametrize("num_patches", [49, 196])
@pytest.mark.parametrize("mask_ratio", [0.75, 0.6, 0.9])
def test_counts_are_exact_disjoint_and_hard_is_the_top(num_patches, mask_ratio):
    generator = torch.Generator().manual_seed(0)
    for progress in torch.linspace(0, 1, 7).tolist():
        gpa = torch.randn(16, num_patches, generator=generator)
        groups = gpa_mask_groups(gpa, mask_ratio, progress, generator=generator)
        num_hard, num_soft, num_random = mask_counts(num_patches, mask_ratio, progress)
        len_mask = num_patches - int(num_patches * (1 - mask_ratio))
        assert num_hard + num_soft + num_random == len_mask
        assert ((groups == HARD).sum(1) == num_hard).all()
        assert ((groups == SOFT).sum(1) == num_soft).all()
        assert ((groups == RANDOM).sum(1) == num_random).all()
        top = gpa.topk(num_hard, dim=1).indices
        assert (groups.gather(1, top) == HARD).all()


def test_noise_makes_vitmae_drop_exactly_the_chosen_patches():
    generator = torch.Generator().manual_seed(3)
    gpa = torch.randn(8, 49, generator=generator)
    groups = gpa_mask_groups(gpa, 0.75, 0.5, generator=torch.Generator().manual_seed(1))
    noise = gpa_noise(gpa, 0.75, 0.5, generator=torch.Generator().manual_seed(1))
    len_keep = int(49 * 0.25)
    kept = torch.zeros_like(noise, dtype=torch.bool).scatter_(1, noise.argsort(dim=1)[:, :len_keep], True)
    assert torch.equal(kept, groups == KEPT)


def test_reproducible_with_a_generator():
    gpa = torch.randn(4, 49)
    first = gpa_noise(gpa, 0.75, 0.2, generator=torch.Generator().manual_seed(7))
    second = gpa_noise(gpa, 0.75, 0.2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_soft_sampling_prefers_high_gpa_and_random_is_uniform():
    generator = torch.Generator().manual_seed(0)
    gpa = torch.linspace(0, 1, 49).expand(4000, 49)
    groups = gpa_mask_groups(gpa, 0.75, 0.0, generator=generator)
    soft_rate = (groups == SOFT).float().mean(0)
    # Weighted by min-max GPA: the top fifth is picked far more often than the bottom fifth.
    assert soft_rate[-10:].mean() > 3 * soft_rate[:10].mean()
    assert soft_rate[0] < 0.01
    # Random picks, among patches soft did not take, follow no order: each free patch is equally likely.
    free = groups != SOFT
    random_given_free = (groups == RANDOM).float().sum(0) / free.float().sum(0)
    assert random_given_free.std() / random_given_free.mean() < 0.1


def test_constant_gpa_gives_uniform_masks_without_nan():
    gpa = torch.zeros(3000, 49)
    for progress in (0.0, 1.0):
        noise = gpa_noise(gpa, 0.75, progress, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(noise).all()
        masked_rate = (noise >= 1).float().mean(0)
        assert masked_rate.min() > 0.7 and masked_rate.max() < 0.8
