import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_gpa import brute_force
from tiny import free_port, tiny_kwargs
from transformers import ViTConfig, ViTMAEConfig, ViTMAEModel, ViTModel

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.teacher import ema_update, load_pretrained_teacher, query_key_at


def reference_query_key(encoder, pixel_values):
    """Q and K of every block, read with forward hooks from the encoder's own full forward pass (SDPA)."""
    captured = {}

    def keep(name, index):
        def hook(module, inputs, output):
            heads = encoder.config.num_attention_heads
            captured[(name, index)] = output.view(*output.shape[:2], heads, -1).transpose(1, 2)

        return hook

    handles = []
    for index, layer in enumerate(encoder.layers):
        handles.append(layer.attention.q_proj.register_forward_hook(keep("q", index)))
        handles.append(layer.attention.k_proj.register_forward_hook(keep("k", index)))
    with torch.no_grad():
        if isinstance(encoder, ViTMAEModel):
            # mask_ratio=0 and increasing noise: every patch kept, in its own order.
            identity = torch.arange(encoder.embeddings.patch_embeddings.num_patches, dtype=torch.float32)
            encoder(pixel_values, noise=identity.expand(pixel_values.shape[0], -1))
        else:
            encoder(pixel_values)
    for handle in handles:
        handle.remove()
    return captured


@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("score, queries", [("logits", "all"), ("logits", "others"), ("softmax", "all")])
@pytest.mark.parametrize("head", [-1, 1, None])
def test_compute_gpa_equals_brute_force_from_the_teachers_own_qk(layer, score, queries, head):
    torch.manual_seed(0)
    model = GPAForPreTraining(
        GPAConfig(**tiny_kwargs(gpa_layer=layer, gpa_head=head, gpa_score=score, gpa_queries=queries))
    )
    reference = ViTMAEModel(ViTMAEConfig(**tiny_kwargs(mask_ratio=0.0)))
    reference.load_state_dict(model.vit.state_dict())
    pixel_values = torch.randn(3, 1, 28, 28)
    captured = reference_query_key(reference, pixel_values)
    expected = brute_force(captured[("q", layer)], captured[("k", layer)], head, score, queries)
    torch.testing.assert_close(model.compute_gpa(pixel_values).double(), expected, rtol=1e-4, atol=1e-4)


def test_a_vit_teacher_is_scored_from_its_own_qk(tmp_path):
    torch.manual_seed(0)
    vit_config = ViTConfig(**{k: v for k, v in tiny_kwargs().items() if not k.startswith("decoder")})
    ViTModel(vit_config, add_pooling_layer=False).save_pretrained(tmp_path)
    teacher = load_pretrained_teacher(str(tmp_path))
    assert isinstance(teacher, ViTModel) and not any(p.requires_grad for p in teacher.parameters())
    pixel_values = torch.randn(2, 1, 28, 28)
    captured = reference_query_key(teacher, pixel_values)
    query, key = query_key_at(teacher, pixel_values, 1)
    torch.testing.assert_close(query, captured[("q", 1)])
    torch.testing.assert_close(key, captured[("k", 1)])


def test_only_blocks_before_the_scored_one_run_whole():
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_layer=1)))
    whole_blocks, projections = [], []
    for index, layer in enumerate(model.vit.layers):
        layer.register_forward_hook(lambda *args, i=index: whole_blocks.append(i))
        layer.attention.v_proj.register_forward_hook(lambda *args, i=index: projections.append(i))
    scores = model.compute_gpa(torch.randn(2, 1, 28, 28))
    assert whole_blocks == [0] and projections == [0]
    assert scores.grad_fn is None


def test_ema_update_is_a_momentum_step():
    torch.manual_seed(0)
    teacher, student = ViTMAEModel(ViTMAEConfig(**tiny_kwargs())), ViTMAEModel(ViTMAEConfig(**tiny_kwargs()))
    before = teacher.layers[0].attention.q_proj.weight.clone()
    ema_update(teacher, student, 0.9)
    expected = 0.9 * before + 0.1 * student.layers[0].attention.q_proj.weight
    torch.testing.assert_close(teacher.layers[0].attention.q_proj.weight, expected)


def test_missing_teacher_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(OSError, match="--gpa_teacher_name_or_path"):
        GPAForPreTraining(
            GPAConfig(**tiny_kwargs(gpa_teacher="pretrained", gpa_teacher_name_or_path=str(tmp_path / "none")))
        )


def test_a_gpa_checkpoint_loads_as_teacher_quietly_with_its_encoder_weights(tmp_path, capfd):
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs()))
    model.save_pretrained(tmp_path)
    capfd.readouterr()
    teacher = load_pretrained_teacher(str(tmp_path))
    # The decoder the checkpoint also holds is left out by design: no load report, no model-type warning.
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.err + captured.out
    assert "to instantiate a model of type" not in captured.err + captured.out
    for name, value in model.vit.state_dict().items():
        torch.testing.assert_close(teacher.state_dict()[name], value)


def test_a_teacher_checkpoint_missing_encoder_weights_fails_clearly(tmp_path):
    from safetensors.torch import load_file, save_file

    ViTMAEModel(ViTMAEConfig(**tiny_kwargs())).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    # Saved under the legacy names that Hub checkpoints use; the key projection of block 1.
    del weights["encoder.layer.1.attention.attention.key.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 1 encoder weights \(first: 'layers.1.attention.k_proj.weight'\)"):
        load_pretrained_teacher(str(tmp_path))


@pytest.mark.slow
def test_every_teacher_trains_under_fsdp2_on_two_processes_as_one_unsharded_model(tmp_path):
    """tests/fsdp_worker.py on two gloo processes, sharded as fsdp.yaml shards on GPUs (see its docstring)."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port", str(port)]
    command += [str(Path(__file__).parent / "fsdp_worker.py"), str(tmp_path)]
    process = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True, capture_output=True, timeout=240
    )
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    bf16 = results.pop("ema-mam-bf16")
    assert sorted(results) == sorted(f"{t}-{m}" for t in ("self", "ema", "pretrained") for m in ("mam", "nomam"))
    # bf16 (fsdp.yaml's policy): its first loss, before any step, is the fp32 model's up to bf16 rounding.
    assert bf16["dtensor_parameters"] == bf16["parameters"] and bf16["trained_moved"] > 1e-2
    assert bf16["first_losses"][0] == pytest.approx(bf16["first_losses"][1], rel=2e-2)
    for name, result in results.items():
        sharded_loss, unsharded_loss = result["first_losses"]
        assert sharded_loss == pytest.approx(unsharded_loss, rel=1e-6), name
        # Sharded for real: every parameter is a DTensor holding about half of its rows on each rank.
        assert result["dtensor_parameters"] == result["parameters"], name
        assert 0.45 < result["local_fraction"] < 0.6, name
        # Two ranks on half batches take the steps of one model on the whole batch (3 steps of lr 1e-2 moved it 3e-2).
        assert result["trained_moved"] > 1e-2, name
        assert result["vs_reference_without_key_bias"] < 5e-5, name
        assert result["vs_reference"] < 1e-3, name
    for name in ("ema-mam", "ema-nomam"):
        assert results[name]["teacher_moved"] > 1e-2
    for name in ("ema-mam", "pretrained-mam"):
        result = results[name]
        assert result["teacher_tensors"] > 0 and result["loaded_vs_trained"] == 0.0
        assert result["saved_auto_map"]["AutoModelForPreTraining"] == "modeling_gpa.GPAForPreTraining"
        assert result["resumed_vs_uninterrupted_without_key_bias"] < 1e-6
        assert result["resumed_vs_uninterrupted"] < 1e-4
