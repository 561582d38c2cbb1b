"""Named settings of the GPA method: the paper's, the authors' released code's, and this implementation's defaults.

A preset is only a way to fill plain ``GPAConfig`` fields: ``preset_fields`` returns them, and a checkpoint records
the fields, never the preset's name. The released code scores block 9, head 11 of a 12-block, 12-head ViT-B
(the paper's 10-shot choice, Table 5); for a teacher of another depth the same place is kept relative to the end:
block ``depth - 3`` (clamped at 0) and the last head.

Each preset's fields, beside the settings they come from: ``docs/model.md`` ("Paper, released code and our
defaults").
"""

from __future__ import annotations

GPA_PRESETS = ("ours", "paper", "released", "released_mam")

# Blocks from the end of the released code's scored block: block 9 of ViT-B's 12.
RELEASED_BLOCKS_FROM_END = 3


def released_block(num_layers: int) -> int:
    """The released code's scored block (9 of 12) for a teacher of ``num_layers`` blocks: ``num_layers - 3``, >= 0."""
    return max(num_layers - RELEASED_BLOCKS_FROM_END, 0)


def preset_fields(name: str, num_layers: int, num_heads: int, decoder_layers: int = 8) -> dict:
    """The ``GPAConfig`` fields of preset ``name`` for a teacher of ``num_layers`` blocks and ``num_heads`` heads.

    ``decoder_layers``: the pixel decoder's depth, which ``released_mam``'s MAM decoder takes (MAE's ViT-B: 8).

    Block and head come back as non-negative indices. ``"ours"`` is ``GPAConfig``'s defaults; ``"paper"`` the
    paper's text (Eq. 6 ratios, the 10-shot block and head of Table 5, Eq. 7's ``(1 - M_i)`` read with ``M_i = 1``
    on masked patches); ``"released"`` the authors' pretraining script; ``"released_mam"`` their MAM script, which
    holds the soft share at 0.3 for the whole run and turns MAM on, with an attention decoder of its own that
    predicts straight from its input tokens for the first 75% of training and through its blocks after.
    """
    if name not in GPA_PRESETS:
        raise ValueError(f"preset {name!r} is invalid; allowed values: {', '.join(map(repr, GPA_PRESETS))}.")
    if num_layers < 1 or num_heads < 1:
        raise ValueError(f"a teacher needs at least one block and one head; got {num_layers} and {num_heads}.")
    fields = {"hard_ratio_start": 0.0, "hard_ratio_end": 0.5, "gpa_head": num_heads - 1}
    if name == "ours":
        return {
            **fields,
            "soft_ratio_start": 0.5,
            "soft_ratio_end": 0.0,
            "gpa_layer": num_layers - 1,
            "gpa_loss_patches": "masked",
            "gpa_target_norm": "population",
        }
    fields["gpa_layer"] = released_block(num_layers)
    if name == "paper":
        return {
            **fields,
            "soft_ratio_start": 0.5,
            "soft_ratio_end": 0.0,
            "gpa_loss_patches": "visible",
            "gpa_target_norm": "population",
        }
    fields.update(soft_ratio_start=0.3, soft_ratio_end=0.0, gpa_loss_patches="all", gpa_target_norm="released")
    if name == "released_mam":
        fields.update(
            soft_ratio_end=0.3, gpa_prediction=True, gpa_decoder_layers=decoder_layers, gpa_decoder_switch=0.75
        )
    return fields


__all__ = ["GPA_PRESETS", "preset_fields", "released_block"]
