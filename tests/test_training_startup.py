"""The start-up checks of a run, each made once: from the script's checkpoint_to_resume to the trainer's train."""

import pytest
import torch
from tiny import RandomImages, tiny_kwargs, tiny_training_arguments

from modeling_gpa import GPAConfig, GPAForPreTraining, checkpoint_files
from modeling_gpa.training.resume import check_resumable_once
from modeling_gpa.training.script import checkpoint_to_resume
from modeling_gpa.training.trainer import GPATrainer

TINY = tiny_kwargs(patch_size=7, num_hidden_layers=2)


def train_tiny(tmp_path, max_steps: int, resume_from_checkpoint: str | None = None) -> GPATrainer:
    torch.manual_seed(0)
    args = tiny_training_arguments(tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=2)
    trainer = GPATrainer(model=GPAForPreTraining(GPAConfig(**TINY)), args=args, train_dataset=RandomImages(4))
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def test_a_checkpoint_is_read_once_from_the_script_to_the_trainer_and_again_once_a_file_changed(tmp_path, monkeypatch):
    train_tiny(tmp_path, max_steps=2)
    checkpoint = str(tmp_path / "checkpoint-2")
    reads = []
    problem = checkpoint_files.checkpoint_problem

    def counted_problem(path, weights_only=False):
        reads.append(path)
        return problem(path, weights_only)

    monkeypatch.setattr(checkpoint_files, "checkpoint_problem", counted_problem)
    args = tiny_training_arguments(tmp_path, max_steps=3, resume_from_checkpoint=checkpoint)
    assert checkpoint_to_resume(args) == checkpoint
    assert train_tiny(tmp_path, max_steps=3, resume_from_checkpoint=checkpoint).state.global_step == 3
    assert reads == [checkpoint]

    weights = tmp_path / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"cannot resume from {checkpoint}: "):
        check_resumable_once(checkpoint)
    assert reads == [checkpoint, checkpoint]
