import pytest
import torch
from tiny import tiny_kwargs
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.tools.flops import (
    full_forward_flops,
    gpa_score_flops,
    gpa_step_flops,
    mae_step_flops,
    num_patches,
    teacher_forward_flops,
)

# 8x8 single-channel image, 4x4 patches: n = 4, 2 kept at mask ratio 0.5. Encoder 8 wide, 2 heads (head_dim 4).
HAND = dict(
    image_size=8,
    patch_size=4,
    num_channels=1,
    hidden_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=16,
    mask_ratio=0.5,
    decoder_hidden_size=4,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=8,
)
# Patch embedding: 2 * 4 patches * 16 pixels * 8 = 1024.
# Encoder block on 3 tokens: Q,K,V,O 4 * 2*3*8*8 = 1536; QK^T + AV 2 * 2*3*3*8 = 288; MLP 2 * 2*3*8*16 = 1536.
ENCODER = 1024 + 2 * (1536 + 288 + 1536)
# Decoder: embed 2*3*8*4 = 192; block on 5 tokens: 4 * 2*5*4*4 = 640, 2 * 2*5*5*4 = 400, 2 * 2*5*4*8 = 640;
# prediction 2*5*4*16 = 640 (the CLS token included).
DECODER = 192 + (640 + 400 + 640) + 640
# Teacher to the last block (index 1) on 5 tokens: patch embedding 1024; block 0: 4 * 2*5*8*8 = 2560,
# 2 * 2*5*5*8 = 800, 2 * 2*5*8*16 = 2560; Q, K of block 1: 2 * 2*5*8*8 = 1280; logits score, one head: 2*4*4 = 32.
TEACHER = 1024 + (2560 + 800 + 2560) + 1280 + 32
MAM_HEAD = 2 * 5 * 4 * 1


def test_mae_step_matches_a_hand_count():
    step = mae_step_flops(ViTMAEConfig(**HAND))
    assert (step.encoder, step.decoder, step.mam, step.teacher) == (ENCODER, DECODER, 0, 0)
    assert step.total == 3 * (ENCODER + DECODER) == 30768


def test_gpa_step_matches_a_hand_count():
    step = gpa_step_flops(GPAConfig(**HAND))
    assert (step.encoder, step.decoder, step.mam, step.teacher) == (ENCODER, DECODER, MAM_HEAD, TEACHER)
    assert step.total == 3 * (ENCODER + DECODER + MAM_HEAD) + TEACHER == 30888 + 8256
    assert gpa_step_flops(GPAConfig(**HAND, gpa_prediction=False)).total == 30768 + 8256


def test_teacher_variants_match_a_hand_count():
    config = ViTMAEConfig(**HAND)
    assert teacher_forward_flops(config, 1, head=None) == TEACHER - 32 + 2 * 2 * 4 * 4
    # Softmax: the (1+n) x (1+n) logits of one head, 2 * 5 * 4 * 5 = 200, instead of the mat-vec.
    assert teacher_forward_flops(config, 1, score="softmax") == TEACHER - 32 + 200
    # Block 0 only: patch embedding, Q/K of block 0, score.
    assert teacher_forward_flops(config, 0) == 1024 + 1280 + 32
    # A 4x4 image is one patch (2 tokens): 2*1*16*8 = 256, block 0 on 2 tokens 4 * 2*2*64 + 2 * 2*4*8 + 2 * 2*2*128
    # = 1024 + 128 + 1024, Q/K 2 * 2*2*64 = 512, score 2*1*4 = 8.
    assert teacher_forward_flops(config, 1, image_size=4) == 256 + 2176 + 512 + 8
    assert full_forward_flops(config) == 1024 + 2 * (2560 + 800 + 2560)


def test_forward_counts_equal_torch_flop_counter_on_real_models():
    """Forward passes under eager attention, so torch's counter sees QK^T and AV.

    The logits score is an elementwise product and sum in the code, so the counter does not see it.
    """
    torch.manual_seed(0)
    batch = 2
    pixels = torch.randn(batch, 1, 28, 28)
    mae_config = ViTMAEConfig(**tiny_kwargs(), attn_implementation="eager")
    with FlopCounterMode(display=False) as counter:
        ViTMAEForPreTraining(mae_config)(pixels)
    mae = mae_step_flops(mae_config)
    assert counter.get_total_flops() == batch * (mae.encoder + mae.decoder)

    for overrides in (
        dict(),
        dict(gpa_decoder_layers=1, gpa_head=None),
        dict(gpa_score="softmax", gpa_layer=1),
        dict(gpa_teacher_image_size=16),
    ):
        config = GPAConfig(**tiny_kwargs(**overrides), attn_implementation="eager")
        model = GPAForPreTraining(config)
        with FlopCounterMode(display=False) as counter:
            model(pixels)
        step = gpa_step_flops(config)
        head_dim = config.hidden_size // config.num_attention_heads
        heads = config.num_attention_heads if config.gpa_head is None else 1
        patches = num_patches(config, config.gpa_teacher_image_size)
        uncounted = gpa_score_flops(patches, head_dim, heads) if config.gpa_score == "logits" else 0
        assert counter.get_total_flops() == batch * (step.trained + step.teacher - uncounted), overrides


def test_pretrained_teacher_uses_its_own_config(tmp_path):
    deeper = ViTMAEConfig(**tiny_kwargs(num_hidden_layers=5, hidden_size=48))
    config = GPAConfig(**tiny_kwargs(gpa_teacher="pretrained", gpa_teacher_name_or_path=str(tmp_path)))
    with pytest.raises(ValueError, match="teacher_config"):
        gpa_step_flops(config)
    step = gpa_step_flops(config, deeper)
    assert step.teacher == teacher_forward_flops(deeper, 4)
    config.gpa_teacher_config = deeper.to_dict()
    assert gpa_step_flops(config) == step


def test_vit_b16_floors():
    """ViT-B/16 with MAE's decoder: the exact teacher to the last block costs 0.56x of an MAE step."""
    mae = mae_step_flops(ViTMAEConfig()).total
    assert mae == 3 * (8_816_836_608 + 10_745_430_016)
    assert gpa_step_flops(GPAConfig()).total / mae == pytest.approx(1.5569, abs=1e-4)
    assert gpa_step_flops(GPAConfig(gpa_teacher_image_size=112)).total / mae == pytest.approx(1.1371, abs=1e-4)
    assert gpa_step_flops(GPAConfig(gpa_teacher_image_size=112)).total / mae < 1.15
