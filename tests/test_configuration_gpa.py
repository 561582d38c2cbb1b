import pytest
from tiny import tiny_kwargs
from transformers import AutoConfig

from modeling_gpa import GPAConfig


def test_defaults_match_the_paper_and_released_code():
    config = GPAConfig()
    assert config.model_type == "gpa"
    assert (config.gpa_teacher, config.gpa_layer, config.gpa_head) == ("self", -1, -1)
    assert (config.gpa_score, config.gpa_queries) == ("logits", "all")
    assert (config.hard_ratio_start, config.hard_ratio_end) == (0.0, 0.5)
    assert (config.soft_ratio_start, config.soft_ratio_end) == (0.5, 0.0)
    assert config.gpa_prediction is True and config.gpa_loss_weight == 1.0 and config.gpa_decoder_layers == 0
    assert (config.gpa_loss_patches, config.gpa_target_norm) == ("masked", "population")


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"gpa_teacher": "teacherless"}, "gpa_teacher"),
        ({"gpa_teacher": "pretrained"}, "gpa_teacher_name_or_path"),
        ({"hard_ratio_end": 1.5}, "hard_ratio_end"),
        ({"soft_ratio_start": -0.1}, "soft_ratio_start"),
        ({"hard_ratio_start": 0.7, "soft_ratio_start": 0.5}, "hard_ratio_start"),
        ({"gpa_layer": 3}, "gpa_layer"),
        ({"gpa_layer": -4}, "gpa_layer"),
        ({"gpa_head": 4}, "gpa_head"),
        ({"gpa_score": "probabilities"}, "gpa_score"),
        ({"gpa_queries": "cls"}, "gpa_queries"),
        ({"gpa_ema_momentum": 1.2}, "gpa_ema_momentum"),
        ({"gpa_loss_weight": -1.0}, "gpa_loss_weight"),
        ({"gpa_loss_weight": float("nan")}, "gpa_loss_weight"),
        ({"gpa_loss_weight": float("inf")}, "gpa_loss_weight"),
        ({"gpa_ema_momentum": float("nan")}, "gpa_ema_momentum"),
        ({"hard_ratio_end": float("nan")}, "hard_ratio_end"),
        ({"mask_ratio": 0.0}, "mask_ratio"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"mask_ratio": float("nan")}, "mask_ratio"),
        # 49 patches: 0.99 keeps int(49 * 0.01) = 0 of them visible.
        ({"mask_ratio": 0.99}, "mask_ratio"),
        ({"gpa_decoder_layers": -1}, "gpa_decoder_layers"),
        ({"gpa_loss_patches": "kept"}, "gpa_loss_patches"),
        ({"gpa_target_norm": "unbiased"}, "gpa_target_norm"),
    ],
)
def test_invalid_values_fail_at_construction_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field) as error:
        GPAConfig(**tiny_kwargs(**overrides))
    assert "allowed values" in str(error.value)


def test_negative_indices_resolve_from_the_end():
    config = GPAConfig(**tiny_kwargs(gpa_layer=-2, gpa_head=-1))
    assert config.resolved_gpa_layer(3) == 1
    assert config.resolved_gpa_head(4) == 3
    assert GPAConfig(**tiny_kwargs(gpa_head=None)).resolved_gpa_head(4) is None


def test_round_trip_through_autoconfig(tmp_path):
    config = GPAConfig(**tiny_kwargs(gpa_teacher="ema", gpa_head=None, gpa_queries="others"))
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, GPAConfig)
    assert (loaded.gpa_teacher, loaded.gpa_head, loaded.gpa_queries) == ("ema", None, "others")
    assert loaded.hidden_size == 32


def test_a_depth_set_after_construction_carries_the_default_backbone_stages_and_saves(tmp_path):
    config = GPAConfig()
    config.update_from_string("num_hidden_layers=2")
    assert config.stage_names == ["stem", "stage1", "stage2"]
    assert config.out_indices == [2]
    config.num_hidden_layers = 24
    config.save_pretrained(tmp_path)
    assert GPAConfig.from_pretrained(tmp_path).out_indices == [8, 12, 16, 24]
    explicit = GPAConfig(out_indices=[1, 2])
    explicit.num_hidden_layers = 6
    assert explicit.out_indices == [1, 2] and explicit.stage_names[-1] == "stage6"
