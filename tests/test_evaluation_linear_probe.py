"""MAE's linear probe on frozen features."""

import pytest
import torch

from modeling_gpa.evaluation import (
    probe_logits,
    train_linear_probe,
)


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", None), ("lars", 6.4)])
def test_linear_probe_separates_gaussian_blobs(optimizer, lr):
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=generator) * 3
    labels = torch.randint(0, 3, (300,), generator=generator)
    features = centres[labels] + torch.randn(300, 16, generator=generator)
    probe = train_linear_probe(
        features, labels, 3, epochs=10, batch_size=32, lr=lr, optimizer=optimizer, warmup_epochs=1
    )
    assert not probe.norm.affine and probe.norm.eps == 1e-6
    accuracy = (probe_logits(probe, features).argmax(1) == labels).float().mean()
    assert accuracy > 0.95
    with pytest.raises(ValueError, match="Feature dimension mismatch"):
        probe_logits(probe, features[:, :8])
