import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image
from tiny import garment_dataset, garment_model_inputs, tiny_kwargs
from transformers import AutoConfig, ViTConfig, ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel, ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.data.ground_truth import object_patches
from modeling_gpa.head_selection import (
    HeadSelection,
    attention_head_ranking,
    attention_head_recall,
    average_precision,
    candidate_order,
    format_selection,
    recall_ceiling,
    select_attention_head,
    select_head_for_pretraining,
    topk_object_share,
)
from modeling_gpa.teacher import teacher_scores


def object_detector_vit() -> ViTModel:
    """A 2-block ViT on 8x8 images (16 patches of 2x2) whose heads provably rank object patches first or last.

    Each patch embeds as [v, 1 - v, 0, ...] with v its mean intensity, so after LayerNorm the key dimension
    ``LN_0 - LN_1`` is positive on bright (object) patches and negative on dark ones. Every query is the constant e_0,
    so a head's GPA is ``scale * (LN_0 - LN_1)`` up to a positive factor: ``scale > 0`` ranks the object first,
    ``scale < 0`` last. Blocks add nothing (zero output projections), so both blocks see the same tokens.
    Head scales: block 0 = (+1, -0.5), block 1 = (-1, +2); all heads summed is positive in both blocks.
    """
    config = ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
    )
    model = ViTModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        projection = model.embeddings.patch_embeddings.projection
        projection.weight[0] = 0.25
        projection.weight[1] = -0.25
        projection.bias[1] = 1.0
        for layer, scales in zip(model.layers, [(1.0, -0.5), (-1.0, 2.0)], strict=True):
            layer.layernorm_before.weight.fill_(1.0)
            layer.layernorm_after.weight.fill_(1.0)
            for head, scale in enumerate(scales):
                layer.attention.q_proj.bias[4 * head] = 1.0
                layer.attention.k_proj.weight[4 * head, 0] = scale
                layer.attention.k_proj.weight[4 * head, 1] = -scale
    return model


def block_images(object_rows: list[int]) -> torch.Tensor:
    """(B, 8, 8) bool: image b is bright on its first ``object_rows[b]`` patches (row-major), dark elsewhere."""
    masks = torch.zeros(len(object_rows), 16, dtype=torch.bool)
    for index, count in enumerate(object_rows):
        masks[index, :count] = True
    return masks.view(-1, 4, 4).repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)


def test_recall_table_matches_a_hand_computation():
    # 16 patches, mask_ratio 0.5 -> k = 16 - int(16 * 0.5) = 8.
    # Image A: 5 object patches. A head ranking the object first puts all 5 in its top 8: 5/8. A head ranking it
    # last finds 11 dark patches, so its top 8 are all dark: 0.
    # Image B: 10 object patches. Object first: top 8 all object, 8/8. Object last: 6 dark + 2 object: 2/8.
    # Mean: object-first heads (0.625 + 1) / 2 = 0.8125; object-last heads (0 + 0.25) / 2 = 0.125.
    pixel_mask = block_images([5, 10])
    pixel_values = pixel_mask.float().unsqueeze(1)
    selection = select_attention_head(object_detector_vit(), pixel_values, object_patches(pixel_mask, 2), 0.5)
    expected = torch.tensor([[0.8125, 0.125, 0.8125], [0.125, 0.8125, 0.8125]])
    torch.testing.assert_close(selection.recall, expected)
    # Average precision: object-first heads rank every object patch above every dark one (AP 1). Object-last heads
    # put image A's 5 object patches at ranks 12..16 and image B's 10 at ranks 7..16.
    last_a = sum(i / (11 + i) for i in range(1, 6)) / 5
    last_b = sum(i / (6 + i) for i in range(1, 11)) / 10
    last = (last_a + last_b) / 2
    torch.testing.assert_close(selection.average_precision, torch.tensor([[1.0, last, 1.0], [last, 1.0, 1.0]]))
    # Four candidates tie on recall and on average precision; the first in row-major order wins.
    assert (selection.best_layer, selection.best_head, selection.best_recall) == (0, 0, 0.8125)
    assert selection.best_average_precision == 1.0 and not selection.tie_break_changed_choice
    assert selection.num_tied_best == 4
    assert selection.num_masked == 8 and selection.num_images == 2
    assert selection.object_coverage == pytest.approx(15 / 32)
    # Cap: image A can put at most its 5 object patches in a top 8 (5/8), image B fills it (8/8). The
    # object-first heads reach it, which is why they tie.
    assert selection.recall_ceiling == pytest.approx((5 / 8 + 8 / 8) / 2)
    assert "4 candidates tie at the best recall; average precision chose: it is also the first" in format_selection(
        selection
    )
    assert "most possible: 0.812" in format_selection(selection)


def test_average_precision_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 1.0, 0.0, 0.0, 0.0]])
    objects = torch.tensor(
        [[True, False, True, False, False], [True, False, True, False, False], [False, False, False, False, False]]
    )
    # Ranking 0,1,2,3,4: object patches at ranks 1 and 3 -> (1/1 + 2/3) / 2. Ranking 4,3,2,1,0: ranks 3 and 5 ->
    # (1/3 + 2/5) / 2. No object patch: undefined (NaN).
    precision = average_precision(scores, objects)
    torch.testing.assert_close(precision[:2], torch.tensor([(1 + 2 / 3) / 2, (1 / 3 + 2 / 5) / 2]))
    assert torch.isnan(precision[2])


def test_ties_on_recall_go_to_the_higher_average_precision():
    recall = torch.tensor([[0.5, 0.8, 0.8], [0.8, 0.1, 0.3]])
    precision = torch.tensor([[0.9, 0.6, 0.7], [0.75, 0.99, 0.5]])
    # Recall 0.8 ties three candidates: AP 0.75 (flat 3), 0.7 (2), 0.6 (1); then recall 0.5, 0.3, 0.1.
    assert candidate_order(recall, precision).tolist() == [3, 2, 1, 0, 5, 4]
    # Recall within 1e-6 is a tie; equal AP falls back to row-major order.
    assert candidate_order(torch.tensor([[0.8, 0.8 + 1e-8]]), torch.tensor([[0.5, 0.5]])).tolist() == [0, 1]
    selection = HeadSelection(
        recall=recall,
        average_precision=precision,
        best_layer=1,
        best_head=0,
        best_recall=0.8,
        best_average_precision=0.75,
        order_layer=0,
        order_head=1,
        object_coverage=0.4,
        num_masked=8,
        num_images=10,
        recall_ceiling=0.8,
        heldout_recall=0.7,
        heldout_average_precision=0.72,
        heldout_order_recall=0.6,
        heldout_order_average_precision=0.55,
        heldout_object_coverage=0.4,
        num_heldout=50,
        heldout_recall_ceiling=0.8,
    )
    assert selection.tie_break_changed_choice and selection.num_tied_best == 3
    text = format_selection(selection)
    assert "average precision chose: it replaces block 0, head 1, the first in block, head order" in text
    assert "held-out, block 0, head 1 (row-major choice): object recall 0.600, average precision 0.550" in text
    top = selection.to_dict()["top"][0]
    assert (top["layer"], top["head"]) == (1, 0) and (top["recall"], top["average_precision"]) == pytest.approx(
        (0.8, 0.75)
    )


def test_recall_ceiling_by_hand():
    objects = torch.zeros(3, 10, dtype=torch.bool)
    objects[0, :2] = True
    objects[1, :7] = True
    # k = 4: min(2, 4) / 4 = 0.5, min(7, 4) / 4 = 1, an image without object 0.
    assert recall_ceiling(objects, 4) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    scores = torch.rand(3, 10)
    assert topk_object_share(scores, objects, 4).mean().item() <= recall_ceiling(objects, 4) + 1e-6


def test_topk_object_share_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.7], [0.0, 1.0, 2.0, 3.0]])
    objects = torch.tensor([[True, True, False, False], [True, True, True, False]])
    # Top 2: patches {0, 2} -> 1 of 2 on the object; patches {3, 2} -> 1 of 2.
    torch.testing.assert_close(topk_object_share(scores, objects, 2), torch.tensor([0.5, 0.5]))
    # Top 3: patches {0, 2, 3} -> 1 of 3; patches {3, 2, 1} -> 2 of 3.
    torch.testing.assert_close(topk_object_share(scores, objects, 3), torch.tensor([1 / 3, 2 / 3]))


def tiny_gpa(**overrides) -> GPAForPreTraining:
    torch.manual_seed(0)
    return GPAForPreTraining(GPAConfig(**tiny_kwargs(**overrides))).eval()


def count_block_calls(encoder) -> list[int]:
    calls = [0] * len(encoder.layers)
    for index, layer in enumerate(encoder.layers):
        layer.register_forward_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("score, queries", [("logits", "all"), ("softmax", "others")])
def test_table_equals_one_truncated_forward_per_candidate_but_runs_each_block_once(score, queries):
    model = tiny_gpa(gpa_score=score, gpa_queries=queries)
    pixel_values = torch.randn(5, 1, 28, 28)
    objects = torch.rand(5, 49) < 0.4
    calls = count_block_calls(model.vit)
    selection = select_attention_head(model, pixel_values, objects, mask_ratio=0.75)
    # 3 blocks: blocks 0 and 1 run once; the last block's output is never needed.
    assert calls == [1, 1, 0]
    k = 49 - int(49 * 0.25)
    for layer in range(3):
        for column, head in enumerate([0, 1, 2, 3, None]):
            scores = teacher_scores(model.vit, pixel_values, layer=layer, head=head, score=score, queries=queries)
            expected = topk_object_share(scores, objects, k).mean()
            assert selection.recall[layer, column].item() == pytest.approx(expected.item(), abs=1e-6)
    best = selection.recall.flatten().argmax().item()
    assert selection.best_layer == best // 5 and selection.best_recall == selection.recall.max().item()


def test_batches_bare_encoders_and_single_candidate_agree():
    model = tiny_gpa()
    pixel_values, objects = torch.randn(7, 1, 28, 28), torch.rand(7, 49) < 0.5
    full = select_attention_head(model, pixel_values, objects, batch_size=64)
    batched = select_attention_head(model, pixel_values, objects, batch_size=3)
    torch.testing.assert_close(full.recall, batched.recall)
    encoder = ViTMAEModel(model.vit.config)
    encoder.load_state_dict(model.vit.state_dict())
    torch.testing.assert_close(select_attention_head(encoder, pixel_values, objects).recall, full.recall)
    torch.testing.assert_close(full.average_precision, batched.average_precision)
    one = attention_head_recall(model, pixel_values, objects, layer=1, head=None, batch_size=2)
    assert one == pytest.approx(full.recall[1, 4].item(), abs=1e-6)
    recall, precision = attention_head_ranking(model, pixel_values, objects, layer=2, head=3, batch_size=2)
    assert (recall, precision) == pytest.approx((full.recall[2, 3].item(), full.average_precision[2, 3].item()))


def test_an_ema_teacher_is_scored_after_copying_the_student():
    model = tiny_gpa(gpa_teacher="ema")
    pixel_values, objects = torch.randn(3, 1, 28, 28), torch.rand(3, 49) < 0.5
    selection = select_attention_head(model, pixel_values, objects)
    torch.testing.assert_close(selection.recall, select_attention_head(model.vit, pixel_values, objects).recall)


def test_bad_inputs_say_what_to_do():
    model = tiny_gpa()
    with pytest.raises(ValueError, match="object_patches has 16 patches per image but the encoder has 49"):
        select_attention_head(model, torch.randn(2, 1, 28, 28), torch.ones(2, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask_ratio=1.0 is invalid"):
        select_attention_head(model, torch.randn(2, 1, 28, 28), torch.ones(2, 49, dtype=torch.bool), 1.0)
    with pytest.raises(TypeError, match="cannot score attention heads of a Linear"):
        select_attention_head(torch.nn.Linear(2, 2), torch.randn(2, 1, 28, 28), torch.ones(2, 49, dtype=torch.bool))


def test_select_head_for_pretraining_writes_the_choice_and_the_heldout_recall(tmp_path):
    model = tiny_gpa()
    pixels, objects = garment_model_inputs(garment_dataset(30), range(22))
    selection = select_head_for_pretraining(
        model,
        pixels[:10],
        objects[:10],
        output_dir=str(tmp_path),
        heldout_pixel_values=pixels[10:],
        heldout_object_patches=objects[10:],
    )
    assert (model.config.gpa_layer, model.config.gpa_head) == (selection.best_layer, selection.best_head)
    alone = select_attention_head(tiny_gpa(), pixels[:10], objects[:10])
    torch.testing.assert_close(selection.recall, alone.recall)
    torch.testing.assert_close(selection.average_precision, alone.average_precision)
    written = json.loads((tmp_path / "head_selection.json").read_text())
    assert written["best"] == {
        "layer": selection.best_layer,
        "head": selection.best_head,
        "recall": selection.best_recall,
        "average_precision": selection.best_average_precision,
    }
    assert len(written["average_precision"]) == 3 and written["order_choice"]["layer"] == selection.order_layer
    assert written["columns"] == [0, 1, 2, 3, "all"] and len(written["recall"]) == 3
    assert written["num_masked"] == 49 - int(49 * 0.25) and written["heldout"]["num_images"] == 12
    assert written["top"][0]["recall"] == selection.best_recall
    assert 0.0 <= selection.heldout_recall <= 1.0

    # The held-out numbers are the chosen candidates' on the 12 held-out images.
    expected = attention_head_recall(
        model, pixels[10:], objects[10:], layer=selection.best_layer, head=selection.best_head
    )
    assert selection.heldout_recall == pytest.approx(expected, abs=1e-6)
    for prefix, layer, head in (("heldout", "best_layer", "best_head"), ("heldout_order", "order_layer", "order_head")):
        recall, precision = attention_head_ranking(
            model, pixels[10:], objects[10:], layer=getattr(selection, layer), head=getattr(selection, head)
        )
        assert getattr(selection, f"{prefix}_recall") == pytest.approx(recall, abs=1e-6)
        assert getattr(selection, f"{prefix}_average_precision") == pytest.approx(precision, abs=1e-6)
    k = written["num_masked"]
    assert written["heldout"]["recall_ceiling"] == pytest.approx(recall_ceiling(objects[10:], k))
    assert written["heldout"]["object_coverage"] == pytest.approx(objects[10:].float().mean().item())
    assert selection.heldout_recall <= selection.heldout_recall_ceiling + 1e-6


def test_select_head_for_pretraining_without_heldout_images_and_without_images(tmp_path):
    pixels, objects = garment_model_inputs(garment_dataset(6), range(6))
    selection = select_head_for_pretraining(tiny_gpa(), pixels, objects, output_dir=str(tmp_path), apply=False)
    assert selection.object_coverage == pytest.approx(objects.float().mean().item())
    assert (selection.heldout_recall, selection.num_heldout) == (None, 0)
    assert json.loads((tmp_path / "head_selection.json").read_text())["heldout"]["num_images"] == 0
    with pytest.raises(ValueError, match="no selection images"):
        select_head_for_pretraining(tiny_gpa(), pixels[:0], objects[:0], output_dir=str(tmp_path))


def load_select_head_script():
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_scripts", "run_select_head.py"
    )
    spec = importlib.util.spec_from_file_location("run_select_head", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_select_head_script_on_masks_writes_table_heat_map_and_config(tmp_path, capsys, annotated_folder):
    checkpoint = tmp_path / "gpa"
    tiny_gpa().save_pretrained(checkpoint)
    annotated_folder(tmp_path / "images")
    script = load_select_head_script()
    output = tmp_path / "selection"
    args = ["--model_name_or_path", str(checkpoint), "--image_dir", str(tmp_path / "images"), "--num_images", "4"]
    args += ["--num_heldout", "2", "--output_dir", str(output), "--write_config", str(output / "gpa.json")]
    selection = script.run(script.parse_args(args))
    assert json.loads((output / "head_selection.json").read_text())["heldout"]["num_images"] == 2
    assert Image.open(output / "head_selection.png").size[0] > 500
    config = AutoConfig.from_pretrained(output / "gpa.json")
    assert isinstance(config, GPAConfig)
    assert (config.gpa_layer, config.gpa_head, config.hidden_size) == (selection.best_layer, selection.best_head, 32)
    printed = capsys.readouterr().out
    assert f"best: block {selection.best_layer}," in printed and "held-out: object recall" in printed


def test_select_head_script_on_boxes_makes_a_vitmae_checkpoint_the_pretrained_teacher(tmp_path, annotated_folder):
    checkpoint = tmp_path / "mae"
    torch.manual_seed(0)
    ViTMAEForPreTraining(ViTMAEConfig(**tiny_kwargs())).save_pretrained(checkpoint)
    annotated_folder(tmp_path / "images")
    script = load_select_head_script()
    args = ["--model_name_or_path", str(checkpoint), "--image_dir", str(tmp_path / "images"), "--num_images", "6"]
    args += ["--boxes_json", str(tmp_path / "images" / "boxes.json"), "--mask_ratio", "0.5"]
    (tmp_path / "config").mkdir()
    args += ["--output_dir", str(tmp_path / "out"), "--write_config", str(tmp_path / "config")]
    selection = script.run(script.parse_args(args))
    assert selection.num_masked == 49 - int(49 * 0.5)
    config = GPAConfig.from_pretrained(tmp_path / "config")
    assert (config.gpa_teacher, config.gpa_teacher_name_or_path) == ("pretrained", str(checkpoint))
    assert (config.gpa_layer, config.gpa_head, config.mask_ratio) == (selection.best_layer, selection.best_head, 0.5)
    teacher = ViTMAEModel.from_pretrained(checkpoint, use_safetensors=True)
    student = GPAForPreTraining(config)
    torch.testing.assert_close(
        student.teacher.layers[0].attention.q_proj.weight, teacher.layers[0].attention.q_proj.weight
    )


def test_select_head_script_errors(tmp_path, annotated_folder):
    annotated_folder(tmp_path / "images")
    script = load_select_head_script()
    with pytest.raises(SystemExit):
        script.parse_args(["--model_name_or_path", "x", "--output_dir", "o"])
    checkpoint = tmp_path / "gpa"
    tiny_gpa().save_pretrained(checkpoint)
    base = ["--model_name_or_path", str(checkpoint), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="need 16 annotated images but 6 are available"):
        script.main(base + ["--image_dir", str(tmp_path / "images"), "--num_images", "16", "--num_heldout", "0"])
    with pytest.raises(SystemExit, match="mask directory"):
        script.main(base + ["--image_dir", str(tmp_path / "images"), "--masks_dir", str(tmp_path / "none")])


@pytest.mark.slow
def test_selection_on_tensors_needs_neither_datasets_nor_matplotlib(tmp_path):
    # The GPU benchmark machines have neither package; the benchmark scores heads from tensors.
    script = textwrap.dedent(
        """
        import sys

        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("datasets", "evaluate", "matplotlib"):
                    raise ImportError(name)

        sys.meta_path.insert(0, Missing())
        import torch
        from transformers import ViTConfig, ViTModel
        from modeling_gpa.data.ground_truth import object_patches
        from modeling_gpa.head_selection import select_attention_head

        encoder = ViTModel(ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=8), add_pooling_layer=False)
        objects = object_patches(torch.rand(2, 8, 8) > 0.5, 2)
        print(tuple(select_attention_head(encoder, torch.randn(2, 1, 8, 8), objects).recall.shape))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(1, 3)"
