import pytest
import torch

from modeling_gpa.masking import (
    HARD,
    KEPT,
    PAPER_SCHEDULE,
    RANDOM,
    SOFT,
    MaskSchedule,
    mask_counts,
    mask_fractions,
    mask_groups,
    num_masked_patches,
    progress_tensor,
    scheduled_noise,
)


def gpa_mask_groups(score, mask_ratio, progress, schedule=PAPER_SCHEDULE, generator=None):
    return mask_groups(score, num_masked_patches(score.shape[1], mask_ratio), progress, schedule, generator=generator)


def test_fractions_follow_eq6_linearly():
    assert mask_fractions(0.0) == (0.0, 0.5, 0.5)
    assert mask_fractions(1.0) == (0.5, 0.0, 0.5)
    hard, soft, random = mask_fractions(0.3)
    assert (hard, soft) == pytest.approx((0.15, 0.35))
    assert random == pytest.approx(0.5)
    assert mask_fractions(2.0) == mask_fractions(1.0)


def test_soft_is_clipped_so_hard_plus_soft_fit():
    hard, soft, random = mask_fractions(1.0, MaskSchedule(0.0, 0.8, 0.0, 0.6))
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
    noise = scheduled_noise(gpa, 0.75, 0.5, generator=torch.Generator().manual_seed(1))
    len_keep = int(49 * 0.25)
    kept = torch.zeros_like(noise, dtype=torch.bool).scatter_(1, noise.argsort(dim=1)[:, :len_keep], True)
    assert torch.equal(kept, groups == KEPT)


def test_reproducible_with_a_generator():
    gpa = torch.randn(4, 49)
    first = scheduled_noise(gpa, 0.75, 0.2, generator=torch.Generator().manual_seed(7))
    second = scheduled_noise(gpa, 0.75, 0.2, generator=torch.Generator().manual_seed(7))
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
        noise = scheduled_noise(gpa, 0.75, progress, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(noise).all()
        masked_rate = (noise >= 1).float().mean(0)
        assert masked_rate.min() > 0.7 and masked_rate.max() < 0.8


@pytest.mark.parametrize("num_patches, mask_ratio", [(49, 0.75), (196, 0.75), (196, 0.6), (16, 0.9)])
def test_counts_are_eq6_in_float_arithmetic_at_every_step(num_patches, mask_ratio):
    """The one count implementation (tensors on the device) against Eq. 6 written out in Python floats."""
    schedules = [MaskSchedule(), MaskSchedule(0.0, 0.8, 0.0, 0.6), MaskSchedule(0.1, 0.9, 0.7, 0.1)]
    len_mask = num_patches - int(num_patches * (1 - mask_ratio))
    for schedule in schedules:
        for step in range(0, 1001, 7):
            p = step / 1000
            hard = schedule.hard_start + p * (schedule.hard_end - schedule.hard_start)
            soft = min(schedule.soft_start + p * (schedule.soft_end - schedule.soft_start), 1.0 - hard)
            num_hard = min(int(len_mask * hard), len_mask)
            num_soft = min(int(len_mask * soft), len_mask - num_hard)
            expected = (num_hard, num_soft, len_mask - num_hard - num_soft)
            assert mask_counts(num_patches, mask_ratio, p, schedule) == expected


def test_a_tensor_progress_gives_the_float_progress_masks():
    gpa = torch.randn(8, 49, generator=torch.Generator().manual_seed(0))
    for progress in (0.0, 0.37, 1.0):
        from_float = gpa_mask_groups(gpa, 0.75, progress, generator=torch.Generator().manual_seed(2))
        from_tensor = gpa_mask_groups(gpa, 0.75, progress_tensor(progress), generator=torch.Generator().manual_seed(2))
        assert torch.equal(from_float, from_tensor)


def test_one_compiled_graph_serves_the_whole_schedule():
    """Counts are tensors compared with ranks, so no shape depends on progress: one graph, exact counts throughout."""
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(gpa_mask_groups, fullgraph=True, backend="eager")
    gpa = torch.randn(4, 49, generator=torch.Generator().manual_seed(0))
    with torch._dynamo.config.patch(error_on_recompile=True):
        for progress in torch.linspace(0, 1, 21).tolist():
            groups = compiled(gpa, 0.75, progress_tensor(progress))
            for group, count in zip((HARD, SOFT, RANDOM), mask_counts(49, 0.75, progress), strict=True):
                assert ((groups == group).sum(1) == count).all()
            top = gpa.topk(mask_counts(49, 0.75, progress)[0], dim=1).indices
            assert (groups.gather(1, top) == HARD).all()
    assert counters["stats"]["unique_graphs"] == 1
