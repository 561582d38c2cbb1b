"""Which checkpoint a resume uses, on real GPATrainer checkpoints of a tiny model: an incomplete one (no optimizer or
scheduler) is skipped unless resuming from weights alone, another model's stops in one line, another model's weights
inside a checkpoint make it fall back."""

import json
import shutil

import pytest
import torch
from tiny import RandomImages, tiny_kwargs, tiny_training_arguments

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.checkpoint_files import ResumeRefused
from modeling_gpa.training.trainer import GPATrainer

TINY = tiny_kwargs(patch_size=7, num_hidden_layers=2)
SETTINGS = dict(max_steps=6, save_strategy="steps", save_steps=2, logging_steps=1)


def tiny_model(**overrides) -> GPAForPreTraining:
    torch.manual_seed(0)
    return GPAForPreTraining(GPAConfig(**{**TINY, **overrides}))


def learning_rates(output_dir) -> dict[int, float]:
    """The learning rate logged at each step, from the final checkpoint's state."""
    state = json.loads((output_dir / "checkpoint-6" / "trainer_state.json").read_text())
    return {entry["step"]: entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 6-step run (linear decay from 1e-3) with checkpoints at steps 2, 4 and 6."""
    output_dir = tmp_path_factory.mktemp("reference")
    args = tiny_training_arguments(output_dir, **SETTINGS)
    GPATrainer(model=tiny_model(), args=args, train_dataset=RandomImages(8)).train()
    return output_dir


def interrupted_copy(reference, tmp_path, remove: str):
    """The reference run's checkpoints 2 and 4 (as if stopped after step 4), ``remove`` deleted from checkpoint-4."""
    for step in (2, 4):
        shutil.copytree(reference / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}")
    (tmp_path / "checkpoint-4" / remove).unlink()
    return tmp_path


def resume(output_dir, checkpoint=True, model=None, **overrides) -> GPATrainer:
    args = tiny_training_arguments(output_dir, **{**SETTINGS, **overrides})
    trainer = GPATrainer(model=model or tiny_model(), args=args, train_dataset=RandomImages(8))
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer


@pytest.mark.parametrize("missing", ["scheduler.pt", "optimizer.pt"])
def test_a_checkpoint_without_its_scheduler_or_optimizer_is_skipped_and_the_schedule_stays_exact(
    reference, tmp_path, caplog, missing
):
    output_dir = interrupted_copy(reference, tmp_path, missing)
    with caplog.at_level("WARNING"):
        trainer = resume(output_dir)

    assert f"Skipping checkpoint {output_dir / 'checkpoint-4'}, which cannot be loaded: it is incomplete, without " in (
        caplog.text
    )
    assert missing in caplog.text and "--resume_from_weights_only" in caplog.text
    assert trainer.state.global_step == 6
    # Resumed from checkpoint-2: steps 3-6 follow the uninterrupted schedule (no restart at 1e-3).
    assert learning_rates(output_dir) == pytest.approx(learning_rates(reference))


def test_resuming_from_weights_only_says_what_starts_afresh(reference, tmp_path, caplog):
    output_dir = interrupted_copy(reference, tmp_path, "scheduler.pt")
    with caplog.at_level("WARNING"):
        trainer = resume(output_dir, resume_from_weights_only=True)

    assert (
        f"resuming from the weights of {output_dir / 'checkpoint-4'} only: it has no scheduler.pt, so these start "
        "afresh: the learning-rate schedule." in caplog.text
    )
    assert trainer.state.global_step == 6
    rates, expected = learning_rates(output_dir), learning_rates(reference)
    # Steps 5 and 6 run a new schedule from its start, as the warning said.
    assert rates[4] == pytest.approx(expected[4]) and rates[5] == pytest.approx(expected[1])


@pytest.mark.parametrize(
    ("changed", "names"),
    [
        (dict(hidden_size=64, intermediate_size=128), "hidden_size=32, intermediate_size=64 there, hidden_size=64"),
        (dict(patch_size=4), "patch_size=7 there, patch_size=4 here"),
        (dict(num_hidden_layers=3), "num_hidden_layers=2 there, num_hidden_layers=3 here"),
        (dict(num_attention_heads=2), "num_attention_heads=4 there, num_attention_heads=2 here"),
    ],
)
def test_a_resume_on_another_model_stops_in_one_line_naming_both_shapes(reference, tmp_path, changed, names):
    with pytest.raises(ResumeRefused) as error:
        resume(tmp_path, str(reference / "checkpoint-4"), model=tiny_model(**changed))
    message = str(error.value)
    assert message.startswith(f"cannot resume from {reference / 'checkpoint-4'}: it holds another model than this run")
    assert names in message and "\n" not in message


def test_another_models_weights_in_the_last_checkpoint_make_it_fall_back(reference, tmp_path, caplog):
    output_dir = interrupted_copy(reference, tmp_path, "rng_state.pth")
    tiny_model(hidden_size=48).save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", output_dir / "checkpoint-4" / "model.safetensors")

    with caplog.at_level("WARNING"):
        trainer = resume(output_dir, str(output_dir / "checkpoint-4"))
    assert f"Skipping checkpoint {output_dir / 'checkpoint-4'}, which cannot be loaded: model.safetensors holds " in (
        caplog.text
    )
    assert "another model's weights" in caplog.text and trainer.state.global_step == 6
    assert learning_rates(output_dir) == pytest.approx(learning_rates(reference))

    # The resumed run wrote checkpoint-4 anew; a checkpoint named explicitly does not fall back.
    shutil.copy(tmp_path / "other" / "model.safetensors", output_dir / "checkpoint-4" / "model.safetensors")
    with pytest.raises(ResumeRefused, match="model.safetensors holds another model's weights .*; point --resume_from"):
        resume(tmp_path / "elsewhere", str(output_dir / "checkpoint-4"))
