"""The protocol comparison's commands (same data and seed for every run) and its table."""

from benchmarks.measuring.finetune_recipes import markdown, parse_args, run_commands


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_every_run_sees_the_same_data_and_seed():
    args = parse_args(["--model_name_or_path", "ckpt", "--max_train_samples", "500", "--epochs", "2"])
    commands = run_commands(args)
    assert list(commands) == [
        "finetune mae",
        "finetune gpa_released",
        "finetune plain",
        "linear probe lars rrc",
        "linear probe lars none",
        "linear probe sgd rrc",
        "linear probe sgd none",
    ]
    for command in commands.values():
        assert (_flag(command, "--seed"), _flag(command, "--max_train_samples")) == ("0", "500")
        assert _flag(command, "--dataset_name") == "fashion_mnist"
    assert [_flag(commands[name], "--recipe") for name in list(commands)[:3]] == ["mae", "gpa_released", "plain"]
    # The plain recipe keeps its own batch; only the epochs are shared.
    assert "--total_batch_size" not in commands["finetune plain"]
    assert _flag(commands["finetune plain"], "--num_train_epochs") == "2"
    assert _flag(commands["finetune mae"], "--total_batch_size") == "128"
    assert [_flag(commands[name], "--augment") for name in list(commands)[3:]] == ["rrc", "none"] * 2
    assert [_flag(commands[name], "--optimizer") for name in list(commands)[3:]] == ["lars"] * 2 + ["sgd"] * 2
    assert len({_flag(command, "--output_dir") for command in commands.values()}) == 7


def test_table_has_a_row_per_protocol():
    recipe = {"layer_decay": 0.65, "drop_path": 0.1, "pooling": "avg", "auto_augment": "rand-m9-mstd0.5-inc1"}
    recipe |= {"reprob": 0.25, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1}
    finetune = {"recipe": recipe, "total_batch_size": 256, "learning_rate": 5e-4, "max_grad_norm": 0.0, "epochs": 5}
    finetune |= {"top1_accuracy": 0.8123, "top5_accuracy": 0.99, "best_top1_accuracy": 0.82, "best_epoch": 4.0}
    probe = {"optimizer": "lars", "batch_size": 1024, "lr": 0.4, "epochs": 10, "pooling": "cls", "augment": "rrc"}
    probe |= {"top1_accuracy": 0.7, "top5_accuracy": 0.95}
    header = {"date": "d", "machine": "m", "versions": "v", "model_name_or_path": "c", "num_train": 10}
    header |= {"num_eval": 5, "seed": 0}
    table = markdown(
        {"finetune mae": finetune | {"seconds": 60}, "linear probe lars rrc": probe | {"seconds": 9}}, "cmd", header
    )
    assert "| finetune mae | batch 256, lr 0.0005, layer decay 0.65, drop path 0.1, avg pooling" in table
    assert "| 81.23 | 99.00 | 82.00 (epoch 4) | 60 |" in table
    assert (
        "| linear probe lars rrc | LARS, batch 1024, lr 0.4, 10 epochs, cls token, new crop + flip each epoch | 70.00"
        in table
    )


def test_a_finished_run_is_read_back_instead_of_run_again(tmp_path):
    import json

    from benchmarks.measuring.finetune_recipes import run_all

    output_dir = tmp_path / "run"
    output_dir.mkdir()
    command = ["run_scripts/run_linear_probe.py", "--output_dir", str(output_dir)]
    (output_dir / "results.json").write_text(json.dumps({"top1_accuracy": 0.5}))
    (output_dir / "benchmark_run.json").write_text(json.dumps({"command": command, "seconds": 12.5}))
    assert run_all({"probe": command}) == {"probe": {"top1_accuracy": 0.5, "seconds": 12.5}}
