"""One process of the two-process FSDP2 check in tests/test_teacher.py: ``torchrun --nproc_per_node 2 <this> OUT``.

Every teacher (self, ema, pretrained), with and without MAM, in fp32 (and one in fsdp.yaml's bf16), is sharded the
way ``accelerate launch --config_file run_scripts/accelerate_configs/fsdp.yaml`` shards it on GPUs: accelerate's own
``fsdp2_prepare_model`` with the plugin that config describes (accelerate runs FSDP only on GPUs, so the plugin is
handed to it here). Each rank trains on its half of a fixed batch of 4; an unsharded copy trained on the whole batch
is the reference. Three optimizer steps, with an FSDP checkpoint (accelerate's save_fsdp_model / save_fsdp_optimizer,
as Trainer saves one) after the second, reloaded into a freshly built model that then takes the third step again.
Rank 0 writes what it measured to OUT/results.json.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import (
    fsdp2_prepare_model,
    load_fsdp_model,
    load_fsdp_optimizer,
    save_fsdp_model,
    save_fsdp_optimizer,
)
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy
from torch.distributed.tensor import DTensor
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from modeling_gpa import GPAConfig, GPAForPreTraining

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from tiny import tiny_kwargs  # noqa: E402

TINY = tiny_kwargs(patch_size=7, num_hidden_layers=2)
# Hard masking only: the masks depend on the teacher alone, so both ranks and the reference mask alike.
HARD_MASKING = dict(hard_ratio_start=1.0, hard_ratio_end=1.0, soft_ratio_start=0.0, soft_ratio_end=0.0)
PROGRESS = 0.5


def fsdp_plugin_of_config(mixed_precision: bool = False) -> FullyShardedDataParallelPlugin:
    """The plugin accelerate builds from fsdp.yaml's fsdp_config: in full precision, or with its bf16 policy."""
    settings = yaml.safe_load((ROOT / "run_scripts/accelerate_configs/fsdp.yaml").read_text())["fsdp_config"]
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision else None
    return FullyShardedDataParallelPlugin(
        mixed_precision_policy=policy,
        fsdp_version=settings["fsdp_version"],
        auto_wrap_policy=settings["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=[settings["fsdp_transformer_layer_cls_to_wrap"]],
        reshard_after_forward=settings["fsdp_reshard_after_forward"],
        state_dict_type=settings["fsdp_state_dict_type"],
        cpu_ram_efficient_loading=settings["fsdp_cpu_ram_efficient_loading"],
        cpu_offload=settings["fsdp_offload_params"],
        activation_checkpointing=settings["fsdp_activation_checkpointing"],
    )


def build(config: GPAConfig, seed: int) -> GPAForPreTraining:
    torch.manual_seed(seed)
    return GPAForPreTraining(copy.deepcopy(config))


def step(model: GPAForPreTraining, optimizer: torch.optim.Optimizer, pixels: torch.Tensor) -> float:
    """One optimizer step and one EMA step, as GPATrainer takes them."""
    loss = model(pixels, mask_progress=PROGRESS).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    model.update_teacher()
    return loss.item()


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The gathered state dict, as accelerate's get_state_dict gathers an FSDP2 model for save_pretrained."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def max_difference(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], keep=lambda name: True) -> float:
    """Largest absolute difference over the tensors of ``reference`` whose name ``keep`` accepts."""
    assert state.keys() == reference.keys(), sorted(set(state) ^ set(reference))
    return max((state[name].float() - reference[name].float()).abs().max().item() for name in reference if keep(name))


def without_key_bias(name: str) -> bool:
    return not name.endswith("k_proj.bias")


def is_teacher(name: str) -> bool:
    return name.startswith("teacher.")


def run_case(accelerator, plugin, out: Path, name: str, config: GPAConfig, pixels: torch.Tensor, resume: bool) -> dict:
    """Three steps sharded against the unsharded reference; with ``resume``, the checkpoint and save round trips."""
    rank, world = accelerator.process_index, accelerator.num_processes
    local = pixels.chunk(world)[rank]
    reference = build(config, seed=0)
    initial = copy.deepcopy(reference.state_dict())
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)

    def sharded(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = fsdp2_prepare_model(accelerator, build(config, seed))
        return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    model, optimizer = sharded(seed=0)
    parameters = list(model.parameters())
    result = {
        "parameters": len(parameters),
        "dtensor_parameters": sum(isinstance(p, DTensor) for p in parameters),
        "local_fraction": sum(p.to_local().numel() for p in parameters) / sum(p.numel() for p in parameters),
    }
    checkpoint = out / name / "checkpoint"
    with torch.no_grad():
        local_reference_loss = reference(local, mask_progress=PROGRESS).loss.item()
    losses = []
    for index in range(3):
        losses.append(step(model, optimizer, local))
        step(reference, reference_optimizer, pixels)
        if resume and index == 1:
            save_fsdp_model(plugin, accelerator, model, checkpoint)
            save_fsdp_optimizer(plugin, accelerator, optimizer, model, checkpoint)
            accelerator.wait_for_everyone()
    trained = full_state(model)
    expected = reference.state_dict()
    if resume:
        resumed, resumed_optimizer = sharded(seed=1)
        load_fsdp_model(plugin, accelerator, resumed, checkpoint)
        load_fsdp_optimizer(plugin, accelerator, resumed_optimizer, resumed, checkpoint)
        step(resumed, resumed_optimizer, local)
        resumed_state = full_state(resumed)
    if rank != 0:
        return result
    # A key bias gets no gradient (softmax ignores a shift shared by all keys): Adam turns its float noise into
    # steps of up to lr, which differ between any two summation orders. Every other tensor must agree closely.
    result.update(
        # This rank's first loss, sharded and unsharded, on its half of the batch.
        first_losses=[losses[0], local_reference_loss],
        trained_moved=max_difference(expected, initial),
        vs_reference=max_difference(trained, expected),
        vs_reference_without_key_bias=max_difference(trained, expected, keep=without_key_bias),
        teacher_moved=max_difference(expected, initial, keep=is_teacher) if config.gpa_teacher == "ema" else None,
    )
    if resume:
        final = out / name / "final"
        model.save_pretrained(final, state_dict=trained)
        loaded = GPAForPreTraining.from_pretrained(final).state_dict()
        result.update(
            teacher_tensors=sum(key.startswith("teacher.") for key in trained),
            saved_auto_map=json.loads((final / "config.json").read_text())["auto_map"],
            loaded_vs_trained=max_difference(loaded, trained),
            resumed_vs_uninterrupted=max_difference(resumed_state, trained),
            resumed_vs_uninterrupted_without_key_bias=max_difference(resumed_state, trained, keep=without_key_bias),
        )
    return result


def main(out: Path) -> None:
    accelerator = Accelerator(cpu=True)
    plugin = fsdp_plugin_of_config()
    # accelerate enters its FSDP state only on GPUs: on these CPU processes (gloo) it is set by hand, as launching
    # with fsdp.yaml sets it there, so that accelerate's preparation and checkpoint functions take their FSDP2 path.
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    assert accelerator.is_fsdp2
    teacher_dir = out / "teacher"
    if accelerator.is_main_process:
        torch.manual_seed(0)
        ViTMAEForPreTraining(ViTMAEConfig(**TINY)).save_pretrained(teacher_dir)
    accelerator.wait_for_everyone()
    pixels = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    teachers = {
        "self": {},
        "ema": {"gpa_ema_momentum": 0.5},
        "pretrained": {"gpa_teacher_name_or_path": str(teacher_dir)},
    }
    results = {}
    for teacher, settings in teachers.items():
        for mam in (True, False):
            config = GPAConfig(**TINY, **HARD_MASKING, gpa_teacher=teacher, gpa_prediction=mam, **settings)
            name = f"{teacher}-{'mam' if mam else 'nomam'}"
            results[name] = run_case(accelerator, plugin, out, name, config, pixels, resume=mam and teacher != "self")
    # fsdp.yaml's bf16: it runs (no dtype mismatch in the partly run block); bf16 steps are not compared with fp32 ones.
    accelerator.state.fsdp_plugin = bf16 = fsdp_plugin_of_config(mixed_precision=True)
    config = GPAConfig(**TINY, **HARD_MASKING, gpa_teacher="ema", gpa_prediction=True, **teachers["ema"])
    results["ema-mam-bf16"] = run_case(accelerator, bf16, out, "ema-mam-bf16", config, pixels, resume=False)
    if accelerator.is_main_process:
        (out / "results.json").write_text(json.dumps(results, indent=1))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
