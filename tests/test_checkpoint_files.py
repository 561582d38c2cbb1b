"""checkpoint_problem on a real Trainer checkpoint, whole and with each of its files cut short."""

import shutil

import pytest
import torch
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.checkpoint_files import check_resumable, checkpoint_problem, weights_only_resume_note
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


GIT_LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 1048576\n"
)


def test_a_git_lfs_pointer_and_a_header_larger_than_the_file_are_named_without_reading_on(checkpoint, tmp_path):
    """The first 8 bytes of a pointer, or of garbage, read as a header size of about 10^18: nothing is allocated."""
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, copy)
    (copy / "model.safetensors").write_text(GIT_LFS_POINTER)
    assert checkpoint_problem(str(copy)) == (
        "model.safetensors is a git-lfs pointer, not the weights: run git lfs pull in its repository"
    )
    (copy / "model.safetensors").write_bytes(b"\xff" * 8 + b"garbage")
    assert checkpoint_problem(str(copy)) == (
        "model.safetensors has no readable header (it claims 18446744073709551615 header bytes in a 15-byte file)"
    )


@pytest.mark.parametrize(
    ("missing", "restarts"),
    [
        (["optimizer.pt"], "AdamW's moments"),
        (["scheduler.pt"], "the learning-rate schedule"),
        (["optimizer.pt", "scheduler.pt"], "AdamW's moments and the learning-rate schedule"),
    ],
)
def test_a_checkpoint_without_optimizer_or_scheduler_is_incomplete_unless_weights_only(
    checkpoint, tmp_path, missing, restarts
):
    copy = tmp_path / "checkpoint-1"
    shutil.copytree(checkpoint, copy)
    for name in missing:
        (copy / name).unlink()
    assert checkpoint_problem(str(copy)) == (
        f"it is incomplete, without {', '.join(missing)} (resuming would restart {restarts}; "
        "--resume_from_weights_only resumes from its weights alone)"
    )
    assert checkpoint_problem(str(copy), weights_only=True) is None
    assert weights_only_resume_note(str(copy)).startswith(f"resuming from the weights of {copy} only: it has no ")
    assert weights_only_resume_note(str(checkpoint)) is None


def test_a_checkpoint_of_code_files_only_has_no_weights(checkpoint, tmp_path):
    """What a save cut off by SIGTERM or SIGKILL leaves: the model's code and config, nothing else."""
    copy = tmp_path / "checkpoint-1"
    copy.mkdir()
    for path in checkpoint.glob("*.py"):
        shutil.copy(path, copy)
    shutil.copy(checkpoint / "config.json", copy)
    assert checkpoint_problem(str(copy)) == "it has no weights (cut off while saving)"
    assert checkpoint_problem(str(copy), weights_only=True) == "it has no weights (cut off while saving)"
