import pytest
import torch
from tiny import tiny_kwargs
from transformers import ViTConfig, ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.tools.memory import (
    GIB,
    block_parameters,
    memory_table,
    model_state_memory,
    parameter_counts,
    vit_config,
)


def counted(model: torch.nn.Module) -> tuple[int, int, int]:
    """(trained, frozen student, teacher) parameters of a built model."""
    trained = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad and not n.startswith("teacher."))
    teacher = sum(p.numel() for n, p in model.named_parameters() if n.startswith("teacher."))
    return trained, frozen, teacher


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"gpa_teacher": "ema"},
        {"gpa_prediction": False},
        {"gpa_decoder_layers": 1, "gpa_teacher": "ema"},
    ],
)
def test_counts_are_the_modules_parameters(overrides):
    config = GPAConfig(**tiny_kwargs(**overrides))
    counts = parameter_counts(config)
    assert (counts.trained, counts.frozen, counts.teacher) == counted(GPAForPreTraining(config))


def test_counts_of_vit_b_and_of_a_pretrained_vit_teacher(tmp_path):
    with torch.device("meta"):
        model = GPAForPreTraining(vit_config("ViT-B/16", gpa_teacher="ema"))
    counts = parameter_counts(model.config)
    assert (counts.trained, counts.frozen, counts.teacher) == counted(model)
    assert counts.teacher == 85_798_656  # MAE's ViT-B/16 encoder
    deeper = tiny_kwargs(num_hidden_layers=5, hidden_size=48)
    teacher = ViTConfig(**{key: value for key, value in deeper.items() if "decoder" not in key})
    ViTModel(teacher, add_pooling_layer=False).save_pretrained(tmp_path)
    config = GPAConfig(**tiny_kwargs(gpa_teacher="pretrained", gpa_teacher_name_or_path=str(tmp_path)))
    assert parameter_counts(config, teacher_config=teacher).teacher == counted(GPAForPreTraining(config))[2]
    assert block_parameters(768, 3072) == 7_087_872


def test_sharded_engines_divide_what_ddp_keeps_on_every_gpu():
    counts = parameter_counts(vit_config("ViT-L/16", gpa_teacher="ema"))
    ddp = model_state_memory(counts, "ddp", 8)
    fsdp = model_state_memory(counts, "fsdp", 8)
    zero2 = model_state_memory(counts, "deepspeed_zero2", 8)
    assert ddp.total == pytest.approx(16 * counts.trained + 4 * (counts.frozen + counts.teacher))
    assert fsdp.total * 8 == pytest.approx(ddp.total)
    assert zero2.teacher == 2 * counts.teacher and fsdp.total < zero2.total < ddp.total
    assert "| ViT-L/16 | 329.2M + 303.3M | 6.04 GiB | 0.75 GiB | 1.72 GiB |" in memory_table(8)
    assert ddp.total / GIB == pytest.approx(6.04, abs=0.005)
    with pytest.raises(ValueError, match="engine='zero3' is invalid"):
        model_state_memory(counts, "zero3", 8)
