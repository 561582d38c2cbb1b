import pytest
from tiny import tiny_kwargs

from modeling_gpa import GPAConfig
from modeling_gpa.presets import GPA_PRESETS, preset_fields, released_block


def test_released_and_paper_score_block_9_head_11_of_vit_base():
    for name in ("paper", "released", "released_mam"):
        fields = preset_fields(name, 12, 12)
        assert (fields["gpa_layer"], fields["gpa_head"]) == (9, 11)
    assert (preset_fields("ours", 12, 12)["gpa_layer"], preset_fields("ours", 12, 12)["gpa_head"]) == (11, 11)


def test_other_depths_keep_the_block_three_from_the_end_and_the_last_head():
    assert [released_block(depth) for depth in (24, 12, 4, 3, 2, 1)] == [21, 9, 1, 0, 0, 0]
    fields = preset_fields("released", 4, 4)
    assert (fields["gpa_layer"], fields["gpa_head"]) == (1, 3)


def test_each_preset_states_its_ratios_loss_region_and_target():
    expected = {
        "ours": (0.0, 0.5, 0.5, 0.0, "masked", "population"),
        "paper": (0.0, 0.5, 0.5, 0.0, "visible", "population"),
        "released": (0.0, 0.5, 0.3, 0.0, "all", "released"),
        "released_mam": (0.0, 0.5, 0.3, 0.3, "all", "released"),
    }
    names = ("hard_ratio_start", "hard_ratio_end", "soft_ratio_start", "soft_ratio_end")
    names += ("gpa_loss_patches", "gpa_target_norm")
    for preset in GPA_PRESETS:
        fields = preset_fields(preset, 3, 4)
        assert tuple(fields[name] for name in names) == expected[preset], preset
        # Every preset is a valid configuration of a 3-block, 4-head model.
        GPAConfig(**tiny_kwargs(**fields))
    assert preset_fields("released_mam", 3, 4)["gpa_prediction"] is True
    assert "gpa_prediction" not in preset_fields("released", 3, 4)


def test_defaults_are_the_ours_preset():
    config = GPAConfig(**tiny_kwargs())
    fields = preset_fields("ours", 3, 4)
    fields["gpa_layer"], fields["gpa_head"] = fields["gpa_layer"] - 3, fields["gpa_head"] - 4
    assert all(getattr(config, name) == value for name, value in fields.items())


def test_unknown_presets_and_empty_teachers_fail_clearly():
    with pytest.raises(ValueError, match="preset 'mae' is invalid; allowed values: 'ours', 'paper'"):
        preset_fields("mae", 12, 12)
    with pytest.raises(ValueError, match="at least one block"):
        preset_fields("paper", 0, 12)


def test_released_mam_switches_its_own_decoder_at_three_quarters():
    fields = preset_fields("released_mam", 12, 12, decoder_layers=8)
    assert (fields["gpa_decoder_layers"], fields["gpa_decoder_switch"], fields["gpa_prediction"]) == (8, 0.75, True)
    assert "gpa_decoder_switch" not in preset_fields("released", 12, 12)
