import json

import pytest
import torch
from tiny import tiny_kwargs
from transformers import TrainerControl, TrainerState, TrainingArguments

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.head_selection import select_attention_head
from modeling_gpa.training.head_reselection import HeadReselectionCallback


def test_each_selection_writes_what_selection_finds_on_the_current_weights(tmp_path):
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_prediction=False)))
    pixel_values = torch.randn(6, 1, 28, 28)
    objects = torch.zeros(6, 7, 7, dtype=torch.bool)
    objects[:, 2:5, 1:6] = True
    objects = objects.flatten(1)
    callback = HeadReselectionCallback(pixel_values, objects, every_steps=3, output_dir=str(tmp_path))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    state, control = TrainerState(), TrainerControl()

    callback.on_train_begin(args, state, control, model=model)
    chosen = []
    for step in range(1, 7):
        state.global_step = step
        with torch.no_grad():
            # Stands in for an optimizer step: every block's weights move.
            for parameter in model.vit.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
        callback.on_step_end(args, state, control, model=model)
        if step % 3 == 0:
            expected = select_attention_head(model, pixel_values, objects)
            assert (model.config.gpa_layer, model.config.gpa_head) == (expected.best_layer, expected.best_head)
            chosen.append((expected.best_layer, expected.best_head, expected.best_average_precision))
    callback.on_train_end(args, state, control, model=model)

    history = json.loads((tmp_path / "head_reselection.json").read_text())
    assert [entry["step"] for entry in history["selections"]] == [0, 3, 6]
    for entry, (layer, head, precision) in zip(history["selections"][1:], chosen, strict=True):
        assert (entry["layer"], entry["head"]) == (layer, head)
        assert entry["average_precision"] == pytest.approx(precision)
    assert len({entry["average_precision"] for entry in history["selections"]}) == 3


def test_every_steps_must_be_positive():
    with pytest.raises(ValueError, match="every_steps=0 is invalid"):
        HeadReselectionCallback(torch.zeros(1, 1, 28, 28), torch.zeros(1, 49, dtype=torch.bool), 0, None)
