"""The training guards on real Trainer runs of a tiny GPA model: non-finite steps, saves, the Hub token, free space."""

import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from tiny import RandomImages, tiny_kwargs, tiny_training_arguments
from transformers import TrainerCallback

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.finite_weights import nonfinite_tensors
from modeling_gpa.training.guards import NonFiniteTrainingError, NotEnoughSpace, TrainingInterrupted
from modeling_gpa.training.trainer import GPATrainer

TINY = tiny_kwargs(patch_size=7, num_hidden_layers=2)


def tiny_model(**overrides) -> GPAForPreTraining:
    torch.manual_seed(0)
    return GPAForPreTraining(GPAConfig(**{**TINY, **overrides}))


class Snapshots(TrainerCallback):
    """The student's weights and AdamW's first moment of one weight after every optimizer step."""

    def __init__(self, trainer: GPATrainer):
        self.trainer, self.weights, self.moments = trainer, [], []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights.append({name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad})
        weight = model.vit.layers[0].attention.q_proj.weight
        self.moments.append(self.trainer.optimizer.state[weight]["exp_avg"].clone())


def poison_step(model: GPAForPreTraining, trainer: GPATrainer, step: int) -> None:
    """Makes the images of optimizer step ``step`` (1-based) NaN, so its loss and gradients are NaN."""

    def hook(module, args, kwargs):
        if trainer.state.global_step + 1 == step:
            kwargs["pixel_values"] = kwargs["pixel_values"] * float("nan")
        return args, kwargs

    model.register_forward_pre_hook(hook, with_kwargs=True)


def test_a_step_with_a_nan_loss_changes_neither_weights_nor_optimizer_and_is_counted(tmp_path, caplog):
    model = tiny_model()
    trainer = GPATrainer(
        model=model, args=tiny_training_arguments(tmp_path, max_steps=4), train_dataset=RandomImages(8)
    )
    snapshots = Snapshots(trainer)
    trainer.add_callback(snapshots)
    poison_step(model, trainer, step=2)
    with caplog.at_level("WARNING"):
        output = trainer.train()

    assert output.metrics["train_nonfinite_steps"] == 1 and trainer.state.global_step == 4
    assert "Step 2: the loss or gradients are not finite" in caplog.text and "(1 in a row" in caplog.text
    after_1, after_2, after_3 = snapshots.weights[:3]
    for name, weight in after_1.items():
        assert torch.equal(after_2[name], weight), name
    assert not torch.equal(after_3["decoder.decoder_pred.weight"], after_2["decoder.decoder_pred.weight"])
    assert torch.equal(snapshots.moments[1], snapshots.moments[0])
    assert not torch.equal(snapshots.moments[2], snapshots.moments[1])
    assert nonfinite_tensors(model) == []


def test_a_diverging_run_stops_naming_the_step_and_checkpoints_only_finite_weights(tmp_path):
    """AdamW at learning rate 1000 overflows the loss at step 2; every later step is NaN too."""
    args = tiny_training_arguments(
        tmp_path, learning_rate=1e3, max_steps=20, max_nonfinite_steps=3, save_strategy="steps", save_steps=1
    )
    trainer = GPATrainer(model=tiny_model(), args=args, train_dataset=RandomImages(16))
    with pytest.raises(NonFiniteTrainingError) as error:
        trainer.train()

    message = str(error.value)
    assert message.startswith("training stopped at step 4: the loss or gradients were NaN or inf at 3 optimizer steps")
    assert "(steps 2-4, each skipped)" in message and "--learning_rate" in message and "\n" not in message
    assert trainer.state.global_step == 3
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-3",
    ]
    for step in (1, 2, 3):
        weights = load_file(tmp_path / f"checkpoint-{step}" / "model.safetensors")
        assert all(torch.isfinite(tensor).all() for tensor in weights.values()), step


def test_non_finite_weights_are_never_saved(tmp_path):
    model = tiny_model()
    trainer = GPATrainer(model=model, args=tiny_training_arguments(tmp_path / "run"), train_dataset=RandomImages(4))
    with torch.no_grad():
        model.vit.layers[1].attention.q_proj.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteTrainingError, match=r"in 1 of \d+ tensors \(first: vit\.layers\.1\.attention\.q_proj"):
        trainer.save_model(str(tmp_path / "final"))
    assert not (tmp_path / "final").exists()


def test_max_steps_zero_and_a_zero_guard_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="--max_steps 0 is invalid; pass an integer >= 1 or -1."):
        tiny_training_arguments(tmp_path, max_steps=0)
    with pytest.raises(ValueError, match="--max_nonfinite_steps 0 is invalid"):
        tiny_training_arguments(tmp_path, max_nonfinite_steps=0)


def test_the_hub_token_is_kept_out_of_every_saved_file(tmp_path):
    secret = "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"
    args = tiny_training_arguments(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, hub_token=secret)
    trainer = GPATrainer(model=tiny_model(), args=args, train_dataset=RandomImages(4))
    trainer.train()
    trainer.save_model()

    saved = torch.load(tmp_path / "checkpoint-1" / "training_args.bin", weights_only=False)
    assert saved.hub_token is None and saved.learning_rate == args.learning_rate
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(files) > 10
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert trainer.args.hub_token == secret


def test_too_little_free_space_fails_before_training(tmp_path, monkeypatch):
    import shutil

    model = tiny_model()
    trainer = GPATrainer(model=model, args=tiny_training_arguments(tmp_path), train_dataset=RandomImages(4))
    usage = shutil.disk_usage(tmp_path)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=weight_bytes))
    with pytest.raises(NotEnoughSpace, match="MiB free but a checkpoint of this model takes about"):
        trainer.train()
    assert trainer.state.global_step == 0


class SigtermAtStep(TrainerCallback):
    """Sends this process SIGTERM during optimizer step ``step``, as a preempting scheduler would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("jit_checkpoint", [False, True])
def test_sigterm_finishes_the_step_saves_a_checkpoint_and_raises(tmp_path, jit_checkpoint):
    """Transformers' own --enable_jit_checkpoint handler is replaced: it would save the partial model as final."""
    args = tiny_training_arguments(tmp_path, max_steps=50, enable_jit_checkpoint=jit_checkpoint)
    trainer = GPATrainer(model=tiny_model(), args=args, train_dataset=RandomImages(8))
    trainer.add_callback(SigtermAtStep(3))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as error:
        trainer.train()
    assert str(error.value).startswith(f"stopped by SIGTERM at step 3 of 50: saved {tmp_path / 'checkpoint-3'}")
    assert error.value.exit_code == 143 and trainer.state.global_step == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-3"]
    assert signal.getsignal(signal.SIGTERM) is before


class SigtermAfterTheLastStep(TrainerCallback):
    def on_train_end(self, args, state, control, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_after_the_last_step_still_leaves_the_checkpoint_it_names(tmp_path):
    trainer = GPATrainer(
        model=tiny_model(), args=tiny_training_arguments(tmp_path, max_steps=2), train_dataset=RandomImages(4)
    )
    trainer.add_callback(SigtermAfterTheLastStep())
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at step 2 of 2"):
        trainer.train()
    assert (tmp_path / "checkpoint-2" / "trainer_state.json").is_file()
