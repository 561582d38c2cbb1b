"""checkpoint_problem on a real Trainer checkpoint, whole and with each of its files cut short."""

import shutil

import pytest
import torch
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.checkpoint_files import check_resumable, checkpoint_problem
from modeling_gpa.training.trainer import GPATrainer, GPATrainingArguments


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """checkpoint-1 of one optimizer step of a tiny GPA model (weights, optimizer, scheduler, RNG, state)."""
    output_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(patch_size=7, num_hidden_layers=2)))
    args = GPATrainingArguments(
        output_dir=str(output_dir), use_cpu=True, report_to="none", max_steps=1, save_steps=1, disable_tqdm=True
    )
    dataset = [{"pixel_values": torch.randn(1, 28, 28)} for _ in range(8)]
    GPATrainer(model=model, args=args, train_dataset=dataset).train()
    return output_dir / "checkpoint-1"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("trainer_state.json", "trainer_state.json is not valid JSON (JSONDecodeError"),
        ("model.safetensors", "model.safetensors is truncated ("),
        ("optimizer.pt", "optimizer.pt is truncated or not a torch.save archive"),
        ("rng_state.pth", "rng_state.pth is truncated or not a torch.save archive"),
    ],
)
def test_each_truncated_file_is_named(checkpoint, tmp_path, name, problem):
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, copy)
    assert checkpoint_problem(str(copy)) is None
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) * 2 // 3])
    assert checkpoint_problem(str(copy)).startswith(problem)
    with pytest.raises(ValueError, match=f"cannot resume from {copy}: {name}"):
        check_resumable(str(copy))


def test_missing_state_or_weights_header(checkpoint, tmp_path):
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, copy)
    (copy / "model.safetensors").write_bytes(b"\x01")
    assert checkpoint_problem(str(copy)) == "model.safetensors has no readable header (error)"
    (copy / "trainer_state.json").unlink()
    assert checkpoint_problem(str(copy)) == "it has no trainer_state.json (cut off while saving)"
    assert checkpoint_problem(str(tmp_path / "none")) == "no such directory"


def test_a_truncated_stream_position_is_named(checkpoint, tmp_path):
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, copy)
    (copy / "stream_state_rank1.json").write_text('{"world_size": 2, "epoch": 0, "loader": {"_snap')
    assert checkpoint_problem(str(copy)) == "stream_state_rank1.json is not valid JSON (JSONDecodeError)"
