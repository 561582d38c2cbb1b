"""Bad input ends a script with one line that says what is wrong; other failures keep their traceback."""

import pytest

from modeling_gpa.command_line import exit_on_bad_input


def _fails_with(error: Exception):
    raise error


def test_the_result_passes_through():
    assert exit_on_bad_input(lambda a, b: a + b, 2, 3) == 5


@pytest.mark.parametrize("error", [ValueError("--k must be positive"), FileNotFoundError("no such file: x.json")])
def test_bad_values_and_missing_files_exit_with_one_line(error):
    with pytest.raises(SystemExit) as exit_info:
        exit_on_bad_input(_fails_with, error)
    assert exit_info.value.code == f"error: {error}"


def test_other_errors_are_not_swallowed():
    with pytest.raises(RuntimeError):
        exit_on_bad_input(_fails_with, RuntimeError("a bug"))


def test_a_checkpoint_pickle_that_would_run_code_exits_with_one_line(tmp_path):
    """torch.load refuses it (weights_only) with a paragraph; the script says which global it wanted, in one line."""
    import os

    import torch

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"weight": RunsCode()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(SystemExit) as exit_info:
        exit_on_bad_input(torch.load, tmp_path / "pytorch_model.bin")
    message = exit_info.value.code
    assert message.startswith("error: refused to load a pickled checkpoint file that would run code (")
    assert "GLOBAL posix.system" in message and "\n" not in message and not (tmp_path / "pwned").exists()
