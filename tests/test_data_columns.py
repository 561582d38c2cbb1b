"""The image and label columns: the one named, else a conventional name, else None; a wrong name fails in one line."""

import pytest

from modeling_gpa.data.columns import named_column


def test_a_named_column_wins_over_the_conventional_ones():
    assert named_column(["img", "image", "label"], "img", ("image",), "image") == "img"


def test_the_first_conventional_column_present_is_chosen_else_none():
    assert named_column(["labels", "label"], None, ("label", "labels"), "label") == "label"
    assert named_column(["pixels"], None, ("image", "img"), "image") is None


def test_a_missing_named_column_says_which_flag_and_columns():
    with pytest.raises(ValueError, match=r"^Label column 'y' not found: --label_column_name must be one of \['x'\]\.$"):
        named_column(["x"], "y", ("label",), "label")
