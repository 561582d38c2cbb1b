import itertools
import math

import pytest
import torch
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig
from modeling_gpa.hpm import hpm_momentum, relative_loss_prediction_loss, standardized_loss_prediction_loss
from modeling_gpa.modeling_gpa import HPMLossPredictor


def test_relative_loss_is_the_mean_pairwise_cross_entropy_over_masked_pairs():
    generator = torch.Generator().manual_seed(0)
    predicted, losses = torch.randn(2, 6, generator=generator), torch.randn(2, 6, generator=generator)
    losses[0, 1] = losses[0, 2]  # a tie: the pair is left out
    masked = torch.tensor([[1, 1, 1, 0, 1, 0], [0, 1, 1, 1, 1, 1]])
    terms = []
    for image, i, j in itertools.product(range(2), range(6), range(6)):
        if masked[image, i] and masked[image, j] and losses[image, i] != losses[image, j]:
            p = torch.sigmoid(predicted[image, i] - predicted[image, j])
            terms.append(-math.log(p + 1e-6) if losses[image, i] > losses[image, j] else -math.log(1 - p + 1e-6))
    expected = sum(terms) / len(terms)
    assert relative_loss_prediction_loss(predicted, losses, masked).item() == pytest.approx(expected, rel=1e-5)


def test_standardized_loss_is_zero_for_the_standardised_losses():
    losses = torch.tensor([[1.0, 2.0, 4.0, 9.0]])
    masked = torch.tensor([[1, 1, 1, 0]])
    target = (losses[:, :3] - losses[:, :3].mean()) / (losses[:, :3].var() + 1e-6).sqrt()
    predicted = torch.cat([target, torch.tensor([[100.0]])], dim=1)
    assert standardized_loss_prediction_loss(predicted, losses, masked).item() == pytest.approx(0.0, abs=1e-6)


def test_momentum_rises_over_the_ramp_then_holds():
    assert hpm_momentum(0) == 0.999 and hpm_momentum(50) == pytest.approx(0.99945)
    assert (
        hpm_momentum(99.9) == pytest.approx(0.999 + 0.99 * 0.0009) and hpm_momentum(100) == hpm_momentum(400) == 0.9999
    )


def test_the_predictor_learns_to_rank_predictably_harder_patches():
    """Patches whose token carries a marker have larger losses; after a few hundred steps of the relative loss the
    predictor orders held-out pairs far better than chance."""
    torch.manual_seed(0)
    config = GPAConfig(
        **tiny_kwargs(decoder_hidden_size=16, decoder_intermediate_size=32, decoder_num_attention_heads=2)
    )
    predictor = HPMLossPredictor(config)
    optimizer = torch.optim.AdamW(predictor.parameters(), lr=3e-3)
    marker = torch.randn(16)

    def batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hardness = torch.rand(size, 49, generator=generator)
        tokens = torch.randn(size, 50, 16, generator=generator) * 0.5
        tokens[:, 1:] += hardness.unsqueeze(-1) * marker
        losses = hardness + 0.05 * torch.randn(size, 49, generator=generator)
        masked = torch.rand(size, 49, generator=generator) < 0.75
        return tokens, losses, masked

    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        tokens, losses, masked = batch(8, generator)
        loss = relative_loss_prediction_loss(predictor(tokens), losses, masked)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokens, losses, _ = batch(32, torch.Generator().manual_seed(2))
    with torch.no_grad():
        predicted = predictor(tokens)
    pairs = (losses.unsqueeze(2) > losses.unsqueeze(1)) & (losses.unsqueeze(2) - losses.unsqueeze(1) > 0.1)
    agree = (predicted.unsqueeze(2) > predicted.unsqueeze(1)) & pairs
    assert agree.sum() / pairs.sum() > 0.85
