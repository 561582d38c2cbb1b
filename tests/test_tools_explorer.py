import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image
from tiny import tiny_kwargs

import modeling_gpa
from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.data.image_inputs import ImageSettings
from modeling_gpa.head_selection import object_ranking_tables
from modeling_gpa.masking import HARD, KEPT, RANDOM, SOFT, MaskSchedule, mask_counts
from modeling_gpa.teacher import query_key_at, teacher_scores
from modeling_gpa.tools.explorer import MASK_ALPHA, Explorer, hidden_object_share
from modeling_gpa.tools.visualization import GROUP_COLOURS


@pytest.fixture(scope="module")
def explorer():
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_teacher="self", gpa_layer=1, gpa_head=2)))
    return Explorer(model.eval(), ImageSettings.for_config(model.config), "tiny")


@pytest.fixture(scope="module")
def garment():
    """A bright 12x16 block on black (the object) with some texture, and its object mask."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[8:20, 8:24] = 180 + (np.arange(16) * 4)[None, :]
    return Image.fromarray(pixels), Image.fromarray(((pixels > 0) * 255).astype(np.uint8))


def test_the_checkpoint_s_choice_is_compute_gpa_and_any_head_is_teacher_scores(explorer, garment):
    image, _ = garment
    pixel_values = explorer.pixel_values(image)
    own = explorer.explore(image, progress=0.3)
    assert (own.layer, own.head) == (1, 2)
    np.testing.assert_allclose(own.gpa, explorer.model.compute_gpa(pixel_values)[0].numpy(), rtol=1e-5, atol=1e-6)
    other = explorer.explore(image, layer=2, head="all", score="softmax", queries="others", progress=0.3)
    expected = teacher_scores(explorer.encoder, pixel_values, layer=2, head=None, score="softmax", queries="others")
    np.testing.assert_allclose(other.gpa, expected[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(own.gpa, other.gpa)


@pytest.mark.parametrize("score", ["softmax", "logits"])
def test_the_cls_attention_variant_is_the_cls_query_row_of_that_block(explorer, garment, score):
    image, _ = garment
    pixel_values = explorer.pixel_values(image)
    view = explorer.explore(image, layer=1, head="0", score=score, queries="cls", progress=0.3)
    query, key = query_key_at(explorer.encoder, pixel_values, 1)
    row = query[:, 0, :1] @ key[:, 0].transpose(-1, -2) / query.shape[-1] ** 0.5
    expected = (row.softmax(-1) if score == "softmax" else row)[0, 0, 1:]
    np.testing.assert_allclose(view.gpa, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert ("softmax", "cls") in explorer.score_variants()


@pytest.mark.parametrize("progress", [0.0, 0.4, 1.0])
def test_mask_counts_follow_eq_6_and_the_mask_image_colours_each_group(explorer, garment, progress):
    image, _ = garment
    view = explorer.explore(image, head="0", layer=0, mask_ratio=0.6, progress=progress)
    hard, soft, random = mask_counts(49, 0.6, progress)
    assert view.counts == {"hard": hard, "soft": soft, "random": random}
    assert view.counts == explorer.expected_counts(0.6, progress)
    grid = view.groups.reshape(7, 7)
    image_rgb = view.image.astype(np.float32) / 255
    for group in (HARD, SOFT, RANDOM):
        for row, column in np.argwhere(grid == group)[:2]:
            pixel = (4 * row + 1, 4 * column + 1)
            expected = (1 - MASK_ALPHA) * image_rgb[pixel] + MASK_ALPHA * np.array(to_rgb(GROUP_COLOURS[group]))
            np.testing.assert_allclose(view.mask[pixel] / 255, expected, atol=1 / 255)
    kept = np.argwhere(grid == KEPT)[0]
    np.testing.assert_array_equal(view.mask[4 * kept[0], 4 * kept[1]], view.image[4 * kept[0], 4 * kept[1]])
    assert view.heat_map.shape == view.mask.shape == view.reconstruction.shape == (28, 28, 3)


def test_the_hidden_object_share_counts_the_object_patches_the_mask_covers(explorer, garment):
    image, object_mask = garment
    view = explorer.explore(image, mask_ratio=0.5, progress=1.0, object_mask=object_mask)
    objects = explorer.object_patches(object_mask)[0]
    assert int(objects.sum()) == 12  # 3 x 4 patches of 4x4 pixels
    expected = ((view.groups != KEPT) & objects.numpy()).sum() / 12
    assert view.object_share == pytest.approx(expected)
    assert view.random_object_share == pytest.approx(25 / 49)
    groups = torch.tensor([[KEPT, HARD, SOFT, RANDOM], [KEPT, KEPT, KEPT, KEPT]])
    objects = torch.tensor([[True, True, False, True], [False, False, False, False]])
    torch.testing.assert_close(hidden_object_share(groups, objects), torch.tensor([2 / 3, 0.0]))


def test_ranking_with_hard_masks_only_is_few_shot_selection_s_recall(explorer, garment):
    image, object_mask = garment
    schedule, explorer.schedule = explorer.schedule, MaskSchedule(1.0, 1.0, 0.0, 0.0)
    try:
        shares = explorer.rank_heads(image, object_mask, mask_ratio=0.25, progress=0.5)
    finally:
        explorer.schedule = schedule
    recall, _ = object_ranking_tables(
        explorer.encoder, explorer.pixel_values(image), explorer.object_patches(object_mask), num_masked=13
    )
    # Top-k object share counts hits among k = 13 masked patches; the hidden share counts them among 12 object patches.
    torch.testing.assert_close(shares, recall * 13 / 12, rtol=0, atol=1e-6)
    assert shares.shape == (3, 5)


def test_bad_choices_give_one_line(explorer, garment):
    image, _ = garment
    with pytest.raises(ValueError, match=r"^block 5 is out of range: the teacher has blocks 0 to 2\.$"):
        explorer.explore(image, layer=5, head="0")
    with pytest.raises(ValueError, match=r"^head 4 is out of range: the teacher has heads 0 to 3\.$"):
        explorer.explore(image, layer=0, head="4")
    with pytest.raises(ValueError, match=r"^mask ratio 1\.0 is invalid"):
        explorer.explore(image, mask_ratio=1.0)
    with pytest.raises(ValueError, match=r"^training progress 1\.5 is invalid"):
        explorer.explore(image, progress=1.5)


def test_only_the_page_imports_gradio_only_the_backend_imports_the_page_and_nothing_imports_the_backend():
    importing = {"gradio": set(), "explorer_page": set(), "explorer_app": set()}
    for path in Path(modeling_gpa.__file__).parent.rglob("*.py"):
        for name in imported_names(path):
            for module in importing:
                if module in name.split("."):
                    importing[module].add(path.name)
    assert importing == {"gradio": {"explorer_page.py"}, "explorer_page": {"explorer_app.py"}, "explorer_app": set()}


@pytest.mark.slow
def test_the_page_runs_as_a_script_without_torch_or_the_package():
    """The page's process starts beside the backend's: it must not import what the backend imports."""
    page = Path(modeling_gpa.__file__).parent / "tools" / "explorer_page.py"
    assert all(
        name.split(".")[0] not in ("torch", "transformers", "modeling_gpa") and not name.startswith(".")
        for name in imported_names(page)
    )
    check = f"import runpy, sys; runpy.run_path({str(page)!r})\n"
    check += "print(sorted({'torch', 'modeling_gpa'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-P", "-c", check], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]


def imported_names(path: Path) -> list[str]:
    """Every module a file imports (relative ones with their leading dots), and the names it imports from them."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += ["." * node.level + (node.module or ""), *(alias.name for alias in node.names)]
    return names


def test_the_script_writes_a_space_for_a_hub_id_and_refuses_a_local_directory(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "gpa_explorer", Path(__file__).parents[1] / "run_scripts" / "gpa_explorer.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--model_name_or_path", "someone/gpa-tiny", "--space_dir", str(tmp_path / "space")])
    assert sorted(path.name for path in (tmp_path / "space").iterdir()) == ["README.md", "app.py", "requirements.txt"]
    assert (tmp_path / "space" / "requirements.txt").read_text() == "modeling-gpa[demo]\n"
    with pytest.raises(SystemExit, match=r"^error: --model_name_or_path .* is a local directory; a Space loads"):
        script.main(["--model_name_or_path", str(tmp_path), "--space_dir", str(tmp_path / "space")])
