import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import tiny_kwargs
from transformers import ViTConfig, ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.data import build_image_processor
from modeling_gpa.masking import HARD, KEPT, RANDOM, SOFT
from modeling_gpa.tools.visualization import (
    configured_layer_head,
    gpa_figure,
    grey_out,
    mae_reconstruction,
    patch_map,
    recall_heatmap_figure,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "run_scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_patch_map_spreads_each_value_over_its_patch():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    expected = np.array([[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [4, 4, 5, 5, 6, 6]])
    np.testing.assert_array_equal(patch_map(values, (4, 6), 2), expected)


def test_gpa_figure_has_the_three_panels_and_counts_each_group(tmp_path):
    groups = torch.tensor([HARD, HARD, SOFT, RANDOM, KEPT, KEPT, RANDOM, HARD, KEPT])
    figure = gpa_figure(np.random.rand(12, 12, 1), torch.randn(9), groups, 4, "ckpt | block 1, head 2")
    axes = figure.axes[:3]
    assert [axis.get_title() for axis in axes] == ["image", "GPA heat map", "mask (6 of 9 patches)"]
    legend = [text.get_text() for text in axes[2].get_legend().get_texts()]
    assert legend == ["hard (top GPA): 3", "soft (GPA-sampled): 1", "random: 2"]
    assert figure.get_suptitle() == "ckpt | block 1, head 2"
    figure.savefig(tmp_path / "gpa.png")
    assert Image.open(tmp_path / "gpa.png").size[0] > 600


def test_recall_heatmap_annotates_every_cell_and_outlines_the_choice():
    recall = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.9, 0.5]])
    figure = recall_heatmap_figure(recall, 1, None, "selection")
    axis = figure.axes[0]
    assert sorted(t.get_text() for t in axis.texts) == sorted(f"{v:.2f}" for v in recall.flatten().tolist())
    assert [label.get_text() for label in axis.get_xticklabels()] == ["0", "1", "all"]
    (outline,) = axis.patches
    assert outline.get_xy() == (1.5, 0.5) and outline.get_edgecolor()[:3] == (1.0, 0.0, 0.0)


def test_recall_heatmap_shows_average_precision_beside_recall():
    recall = torch.tensor([[0.1, 0.9, 0.9], [0.4, 0.9, 0.5]])
    precision = torch.tensor([[0.2, 0.6, 0.8], [0.5, 0.7, 0.4]])
    figure = recall_heatmap_figure(recall, 0, None, "selection", average_precision=precision)
    recall_axis, precision_axis = (axis for axis in figure.axes if axis.texts)
    assert sorted(t.get_text() for t in precision_axis.texts) == sorted(
        f"{v:.2f}" for v in precision.flatten().tolist()
    )
    assert sorted(t.get_text() for t in recall_axis.texts) == sorted(f"{v:.2f}" for v in recall.flatten().tolist())
    assert [axis.patches[0].get_xy() for axis in (recall_axis, precision_axis)] == [(1.5, -0.5), (1.5, -0.5)]
    assert figure.get_suptitle() == "selection"


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_reconstruction_undoes_the_patch_normalisation_with_the_original_s_statistics(norm_pix_loss):
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(norm_pix_loss=norm_pix_loss))).eval()
    pixel_values, noise = torch.randn(2, 1, 28, 28), torch.rand(2, 49)
    result = mae_reconstruction(model, pixel_values, noise)
    with torch.no_grad():
        outputs = model(pixel_values, noise=noise)
    expected = outputs.logits
    if norm_pix_loss:
        target = model.patchify(pixel_values)
        expected = expected * (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    torch.testing.assert_close(model.patchify(result["reconstruction"]), expected)
    masked_patches = model.patchify(result["mask"].unsqueeze(1).float()).amax(dim=-1)
    torch.testing.assert_close(masked_patches, outputs.mask)
    assert result["mask"].sum() == outputs.mask.sum() * 16
    mask = result["mask"].unsqueeze(1)
    torch.testing.assert_close(result["pasted"][~mask], pixel_values[~mask])
    torch.testing.assert_close(result["pasted"][mask], result["reconstruction"][mask])
    assert grey_out(np.zeros((28, 28, 1)), result["mask"][0].numpy()).sum() == 0.5 * result["mask"][0].sum().item()


def test_configured_layer_head_reads_the_gpa_config_or_takes_the_last_head():
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_layer=-2, gpa_head=None)))
    assert configured_layer_head(model) == (1, None)
    vit = ViTModel(ViTConfig(**{k: v for k, v in tiny_kwargs().items() if not k.startswith("decoder")}))
    assert configured_layer_head(vit) == (2, 3)


@pytest.fixture(scope="module")
def gpa_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("gpa")
    GPAForPreTraining(GPAConfig(**tiny_kwargs(soft_ratio_end=0.25, hard_ratio_end=0.25))).save_pretrained(directory)
    build_image_processor(28, 1).save_pretrained(directory)
    return directory


def test_visualize_script_draws_both_figures_per_image(gpa_checkpoint, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.rand(40, 60, 3) * 255).astype(np.uint8)).save(photo)
    output = tmp_path / "figures"
    script = load_script("visualize_gpa")
    written = script.run(
        script.parse_args(
            ["--model_name_or_path", str(gpa_checkpoint), "--images", str(photo), "--gpa_head", "all"]
            + ["--output_dir", str(output)]
        )
    )
    assert sorted(os.path.basename(p) for p in written) == ["gpa_photo.png", "reconstruction_photo.png"]
    assert all(Image.open(p).size[0] > 600 for p in written)
    assert "wrote 2 figures" in capsys.readouterr().out


def test_visualize_script_defaults_and_a_vit_without_decoder(tmp_path):
    vit_dir = tmp_path / "vit"
    ViTModel(ViTConfig(**{k: v for k, v in tiny_kwargs().items() if not k.startswith("decoder")})).save_pretrained(
        vit_dir
    )
    script = load_script("visualize_gpa")
    args = ["--model_name_or_path", str(vit_dir), "--skimage_images", "coffee", "--num_fashion_mnist", "1"]
    written = script.run(script.parse_args(args + ["--output_dir", str(tmp_path / "out")]))
    names = sorted(os.path.basename(p) for p in written)
    assert names[0] == "gpa_coffee.png" and names[1].startswith("gpa_fashion_mnist_0_") and len(names) == 2


def test_visualize_script_bad_arguments_exit_with_one_line(gpa_checkpoint, tmp_path):
    script = load_script("visualize_gpa")
    cases = [
        (["--images", str(tmp_path / "none.png")], "does not exist"),
        (["--gpa_head", "7"], "--gpa_head '7' is invalid"),
        (["--skimage_images", "nothing", "--num_fashion_mnist", "0"], "'nothing' is not a scikit-image image"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit, match=message):
            script.main(["--model_name_or_path", str(gpa_checkpoint), "--output_dir", str(tmp_path)] + extra)
    with pytest.raises(SystemExit, match="no checkpoint at"):
        script.main(["--model_name_or_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path)])
