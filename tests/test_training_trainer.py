import json

import pytest
import torch
from tiny import RandomImages, tiny_kwargs, tiny_training_arguments
from transformers import TrainerCallback

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.training.resume import last_complete_checkpoint
from modeling_gpa.training.trainer import GPATrainer

TINY = tiny_kwargs(patch_size=7, num_hidden_layers=2)
NUM_PATCHES = 16


def tiny_model(seed: int = 0, **overrides) -> GPAForPreTraining:
    torch.manual_seed(seed)
    return GPAForPreTraining(GPAConfig(**{**TINY, **overrides}))


def recorded_progress(model: GPAForPreTraining) -> list[float]:
    """Collects the ``mask_progress`` of every forward call."""
    seen = []
    model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(float(kwargs["mask_progress"])), with_kwargs=True
    )
    return seen


def test_step_schedule_reaches_every_forward_and_fractions_are_logged(tmp_path):
    model = tiny_model()
    seen = recorded_progress(model)
    trainer = GPATrainer(model=model, args=tiny_training_arguments(tmp_path), train_dataset=RandomImages(8))
    trainer.train()

    assert seen == [0.0, 0.25, 0.5, 0.75]
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in logs] == [1, 2, 3, 4]
    for entry, progress in zip(logs, seen, strict=True):
        hard, soft, random = model.mask_fractions(progress)
        assert entry["hard_fraction"] == pytest.approx(hard)
        assert entry["soft_fraction"] == pytest.approx(soft)
        assert entry["random_fraction"] == pytest.approx(random)
        assert entry["loss"] == pytest.approx(entry["pixel_loss"] + entry["gpa_loss"], rel=1e-5)
    assert logs[-1]["hard_fraction"] == pytest.approx(0.375)


@pytest.mark.slow
def test_torch_compile_gives_the_eager_losses_with_one_graph_for_the_whole_schedule(tmp_path):
    """Progress reaches the model as a 0-d tensor: a new value each step must not compile the model again."""
    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model = tiny_model(gpa_teacher="ema", gpa_ema_momentum=0.5)
        extra = dict(torch_compile=True, torch_compile_backend="aot_eager") if compiled else {}
        trainer = GPATrainer(
            model=model, args=tiny_training_arguments(tmp_path / str(compiled), **extra), train_dataset=RandomImages(8)
        )
        with torch._dynamo.config.patch(error_on_recompile=True):
            trainer.train()
        losses[compiled] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert len(losses[True]) == 4 and losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_epoch_schedule_is_quantised_per_epoch(tmp_path):
    model = tiny_model()
    seen = recorded_progress(model)
    trainer = GPATrainer(
        model=model,
        args=tiny_training_arguments(tmp_path, mask_schedule="epoch", max_steps=8),
        train_dataset=RandomImages(8),
    )
    trainer.train()
    assert seen == [0.0] * 4 + [0.5] * 4


def test_ema_teacher_steps_once_per_optimizer_step_under_gradient_accumulation(tmp_path):
    """teacher <- m * teacher + (1 - m) * student exactly once between the optimizer step and the next forward."""

    class Snapshots(TrainerCallback):
        def __init__(self):
            self.before, self.after, self.student, self.micro_batches = [], [], [], 0

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.before.append(model.teacher.layers[0].attention.q_proj.weight.clone())

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.after.append(model.teacher.layers[0].attention.q_proj.weight.clone())
            self.student.append(model.vit.layers[0].attention.q_proj.weight.clone())

        def on_substep_end(self, args, state, control, **kwargs):
            self.micro_batches += 1

    model = tiny_model(gpa_teacher="ema", gpa_ema_momentum=0.5)
    seen = recorded_progress(model)
    trainer = GPATrainer(
        model=model,
        args=tiny_training_arguments(tmp_path, gradient_accumulation_steps=2, max_steps=3),
        train_dataset=RandomImages(12),
    )
    snapshots = Snapshots()
    trainer.add_callback(snapshots)
    trainer.train()

    assert len(seen) == 6 and snapshots.micro_batches == 3
    assert len(snapshots.after) == 3
    for before, after, student in zip(snapshots.before, snapshots.after, snapshots.student, strict=True):
        torch.testing.assert_close(after, 0.5 * before + 0.5 * student)
        assert not torch.allclose(after, student)
    for after, next_before in zip(snapshots.after, snapshots.before[1:], strict=False):
        assert torch.equal(after, next_before)


def test_gradient_accumulation_matches_one_step_of_the_doubled_batch(tmp_path):
    """Fixed noise gives every image the same masked count, so two half-batch means average to the full mean."""
    dataset = RandomImages(4, noise=True)
    sgd = dict(optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0)
    runs = {}
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = tiny_model()
        start = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        args = tiny_training_arguments(
            tmp_path / str(accumulation),
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            **sgd,
        )
        trainer = GPATrainer(model=model, args=args, train_dataset=dataset)
        trainer.train()
        # Plain SGD with learning rate 1: the parameter change is minus the gradient.
        gradient = {name: start[name] - p.detach() for name, p in model.named_parameters() if p.requires_grad}
        log = next(entry for entry in trainer.state.log_history if "loss" in entry)
        runs[accumulation] = gradient, log

    (full_gradient, full_log), (accumulated_gradient, accumulated_log) = runs[1], runs[2]
    for key in ("loss", "pixel_loss", "gpa_loss"):
        assert accumulated_log[key] == pytest.approx(full_log[key], rel=1e-5)
    with torch.no_grad():
        model = tiny_model()
        direct = model(dataset.pixel_values, noise=dataset.noise)
    assert full_log["loss"] == pytest.approx(direct.loss.item(), rel=1e-5)
    assert full_gradient["decoder.decoder_pred.weight"].abs().sum() > 0
    for name, gradient in full_gradient.items():
        torch.testing.assert_close(accumulated_gradient[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_evaluation_uses_the_progress_reached(tmp_path):
    """At progress 1 this schedule masks the top-GPA patches only, so the evaluation loss is deterministic."""
    schedule = dict(hard_ratio_start=0.0, hard_ratio_end=1.0, soft_ratio_start=0.0, soft_ratio_end=0.0)
    model = tiny_model(**schedule)
    dataset = RandomImages(4, seed=1)
    args = tiny_training_arguments(tmp_path, max_steps=2, per_device_eval_batch_size=4)
    trainer = GPATrainer(model=model, args=args, train_dataset=RandomImages(4), eval_dataset=dataset)
    trainer.train()
    metrics = trainer.evaluate()

    with torch.no_grad():
        expected = model.eval()(dataset.pixel_values, mask_progress=1.0)
    assert trainer.mask_progress() == 1.0
    assert metrics["eval_loss"] == pytest.approx(expected.loss.item(), rel=1e-5)
    assert metrics["eval_pixel_loss"] == pytest.approx(expected.pixel_loss.item(), rel=1e-5)
    assert metrics["eval_gpa_loss"] == pytest.approx(expected.gpa_loss.item(), rel=1e-5)


def test_base_learning_rate_is_scaled_by_the_total_batch_size_and_wins(tmp_path):
    args = tiny_training_arguments(
        tmp_path,
        base_learning_rate=1.5e-4,
        learning_rate=0.1,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=4,
    )
    assert args.total_train_batch_size == 32
    assert args.learning_rate == pytest.approx(1.5e-4 * 32 / 256)
    assert tiny_training_arguments(tmp_path, learning_rate=0.1).learning_rate == 0.1


def test_image_pretraining_defaults_and_bad_values(tmp_path):
    args = tiny_training_arguments(tmp_path)
    assert args.label_names == ["pixel_values"] and args.remove_unused_columns is False
    assert args.prediction_loss_only and args.mask_schedule == "step"
    with pytest.raises(ValueError, match="--mask_schedule 'steps' is invalid; allowed values: step, epoch"):
        tiny_training_arguments(tmp_path, mask_schedule="steps")
    with pytest.raises(ValueError, match="--base_learning_rate -1.0 is invalid"):
        tiny_training_arguments(tmp_path, base_learning_rate=-1.0)


def test_resume_restores_every_weight_and_skips_incomplete_checkpoints(tmp_path):
    """Trainer's own reload misses the renamed ViT keys (huggingface/transformers#48805); ours restores them all."""
    args = dict(max_steps=2, save_strategy="steps", save_steps=2)
    trained = tiny_model(gpa_teacher="ema")
    GPATrainer(model=trained, args=tiny_training_arguments(tmp_path, **args), train_dataset=RandomImages(4)).train()
    (tmp_path / "checkpoint-3").mkdir()

    resumed = tiny_model(seed=1, gpa_teacher="ema")
    trainer = GPATrainer(model=resumed, args=tiny_training_arguments(tmp_path, **args), train_dataset=RandomImages(4))
    trainer.train(resume_from_checkpoint=True)

    assert trainer.state.global_step == 2
    expected = trained.state_dict()
    for name, tensor in resumed.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert last_complete_checkpoint(str(tmp_path / "missing")) is None


class Uint8Images(torch.utils.data.Dataset):
    """``size`` random 1x28x28 uint8 images, as the input pipeline yields them; the first carries a replaced image."""

    def __init__(self, size: int):
        self.pixels = torch.randint(
            0, 256, (size, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pixels[index], **({"unreadable_images": ["bad.png"]} if index == 0 else {})}


def test_uint8_batches_are_normalised_with_the_processors_statistics_and_replaced_images_counted(tmp_path):
    from modeling_gpa.data import build_image_processor
    from modeling_gpa.data.pipeline import collate_pixel_values

    # Hard masking only: the evaluation loss is deterministic at any progress.
    model = tiny_model(hard_ratio_start=1.0, hard_ratio_end=1.0, soft_ratio_start=0.0, soft_ratio_end=0.0)
    dataset = Uint8Images(4)
    processor = build_image_processor(28, 1, mean=[0.5], std=[0.25])
    args = tiny_training_arguments(tmp_path, per_device_eval_batch_size=4)
    trainer = GPATrainer(
        model=model, args=args, eval_dataset=dataset, processing_class=processor, data_collator=collate_pixel_values
    )
    metrics = trainer.evaluate()
    with torch.no_grad():
        expected = model.eval()((dataset.pixels.float() / 255 - 0.5) / 0.25, mask_progress=0.0)
    assert metrics["eval_loss"] == pytest.approx(expected.loss.item(), rel=1e-5)
    assert metrics["eval_unreadable_images"] == 1
    assert trainer.evaluate(eval_dataset=torch.utils.data.Subset(dataset, [1, 2]))["eval_unreadable_images"] == 0


def test_uint8_batches_are_normalised_into_the_dtype_of_a_bf16_model_and_train(tmp_path):
    """As under DeepSpeed bf16, whose engine holds bf16 weights: float32 pixels would stop the patch projection."""
    from modeling_gpa.data import build_image_processor
    from modeling_gpa.data.pipeline import collate_pixel_values

    model = tiny_model(gpa_teacher="ema").to(torch.bfloat16)
    dataset = Uint8Images(4)
    seen = []
    model.vit.embeddings.patch_embeddings.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    processor = build_image_processor(28, 1, mean=[0.5], std=[0.25])
    trainer = GPATrainer(
        model=model,
        args=tiny_training_arguments(tmp_path, max_steps=2),
        train_dataset=dataset,
        processing_class=processor,
        data_collator=collate_pixel_values,
    )
    assert trainer.pixel_dtype == torch.bfloat16
    batch = trainer._prepare_inputs(collate_pixel_values([dataset[1], dataset[2]]))
    assert batch["pixel_values"].dtype == torch.bfloat16
    expected = (dataset.pixels[1:3].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(batch["pixel_values"].float(), expected, rtol=2**-8, atol=1e-6)
    trainer.train()
    assert trainer.state.global_step == 2 and set(seen) == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in trainer.state.log_history if "loss" in entry)


def test_fsdp_without_gpus_is_refused_in_one_line_instead_of_running_ddp(tmp_path, monkeypatch):
    # What `accelerate launch --config_file fsdp.yaml` sets for each process.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^FSDP \(fsdp.yaml\) needs GPUs: .*/cpu_2proc\.yaml on a machine without"):
        tiny_training_arguments(tmp_path)


def test_loader_defaults_keep_workers_fed_unless_the_flags_say_otherwise(tmp_path):
    with_workers = tiny_training_arguments(tmp_path, dataloader_num_workers=2)
    assert with_workers.dataloader_persistent_workers and with_workers.dataloader_prefetch_factor == 4
    assert not with_workers.dataloader_pin_memory  # no GPU to copy to
    explicit = tiny_training_arguments(
        tmp_path, dataloader_num_workers=2, dataloader_persistent_workers=False, dataloader_prefetch_factor=2
    )
    assert not explicit.dataloader_persistent_workers and explicit.dataloader_prefetch_factor == 2
    in_process = tiny_training_arguments(tmp_path)
    assert in_process.dataloader_persistent_workers is False and in_process.dataloader_prefetch_factor is None


@pytest.fixture
def files_with_three_bad(tmp_path) -> list[str]:
    """16 image files in order: 4 gray PNGs, 3 consecutive unreadable files, 9 gray PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for index in range(16):
        path = tmp_path / "images" / f"{index:02d}.png"
        path.parent.mkdir(exist_ok=True)
        if 4 <= index < 7:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(path)
        files.append(str(path))
    return files


def unreadable_run(files, output_dir, **overrides) -> GPATrainer:
    from modeling_gpa.data.pipeline import ImageDataset, TrainCrop, collate_pixel_values

    settings = dict(per_device_train_batch_size=4, train_sampling_strategy="sequential", **overrides)
    return GPATrainer(
        model=tiny_model(),
        args=tiny_training_arguments(output_dir, **settings),
        train_dataset=ImageDataset(files, TrainCrop(28, 1)),
        data_collator=collate_pixel_values,
    )


def test_unreadable_files_are_counted_once_over_epochs_and_kept_in_checkpoints(files_with_three_bad, tmp_path):
    """Index 4 meets all three bad files, 5 two, 6 one, in each of 3 epochs: 18 encounters, 3 files."""
    trainer = unreadable_run(files_with_three_bad, tmp_path / "run", max_steps=12, save_strategy="steps", save_steps=4)
    metrics = trainer.train().metrics
    assert metrics["train_unreadable_images"] == 3
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["UnreadableFilesCallback"]["attributes"]["train"] == files_with_three_bad[4:7]

    # Resumed from the last checkpoint, nothing is left to train and no image is read: the count comes from it.
    resumed = unreadable_run(files_with_three_bad, tmp_path / "run", max_steps=12)
    assert resumed.train(resume_from_checkpoint=True).metrics["train_unreadable_images"] == 3


def test_a_prefetched_batch_that_never_trains_is_not_counted(files_with_three_bad, tmp_path):
    """One worker keeps two batches ready: the second batch (indices 4-7) is decoded, but only trained with 2 steps."""
    workers = dict(dataloader_num_workers=1, dataloader_prefetch_factor=2)
    one_step = unreadable_run(files_with_three_bad, tmp_path / "one", max_steps=1, **workers).train()
    assert one_step.metrics["train_unreadable_images"] == 0
    two_steps = unreadable_run(files_with_three_bad, tmp_path / "two", max_steps=2, **workers).train()
    assert two_steps.metrics["train_unreadable_images"] == 3


class AugmentedImages(torch.utils.data.Dataset):
    """16 constant images (image i is all i) plus fresh noise at every read, standing in for random crops."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.full((1, 28, 28), float(index)) + 0.01 * torch.randn(1, 28, 28)}


def resumable_run(output_dir, resume: str | None = None, **overrides) -> tuple[list[list[int]], list[float]]:
    """8 steps of 4 images (4 steps per epoch, a checkpoint every 3 or 4): the images of each step, and its loss."""
    model = tiny_model()
    seen = []
    model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["pixel_values"].mean((1, 2, 3)).round().int().tolist()),
        with_kwargs=True,
    )
    settings = dict(per_device_train_batch_size=4, max_steps=8, save_strategy="steps", **overrides)
    trainer = GPATrainer(
        model=model, args=tiny_training_arguments(output_dir, **settings), train_dataset=AugmentedImages()
    )
    trainer.train(resume_from_checkpoint=resume)
    losses = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    return seen, [losses[step] for step in range(1, 9)]


@pytest.mark.parametrize(
    ("save_steps", "loader", "bit_for_bit"),
    [
        (4, dict(dataloader_num_workers=0), True),
        (4, dict(dataloader_num_workers=1, dataloader_persistent_workers=False), True),
        (4, dict(dataloader_num_workers=1), False),
        (3, dict(dataloader_num_workers=0), False),
    ],
)
def test_what_a_resumed_run_reproduces(tmp_path, save_steps, loader, bit_for_bit):
    """The README's table: same images per step always; the same random draws (losses) only from an epoch boundary
    without persistent workers."""
    images, losses = resumable_run(tmp_path, save_steps=save_steps, **loader)
    resumed_images, resumed_losses = resumable_run(
        tmp_path, resume=str(tmp_path / f"checkpoint-{save_steps}"), save_steps=save_steps, **loader
    )
    assert resumed_images == images[save_steps:]
    assert resumed_losses[:save_steps] == losses[:save_steps]
    if bit_for_bit:
        assert resumed_losses[save_steps:] == losses[save_steps:]
    else:
        assert resumed_losses[save_steps] != losses[save_steps]
        assert resumed_losses[save_steps:] == pytest.approx(losses[save_steps:], rel=0.05)


def test_a_resumed_hpm_run_goes_on_with_the_ema_momentum_schedule(tmp_path):
    """Two steps per epoch, momentum 0.9 -> 0.99 over two epochs: resumed after epoch 2, the run logs epoch 3's
    momentum and ends with the uninterrupted run's EMA copy."""
    hpm = dict(mask_method="hpm", gpa_teacher="ema", gpa_prediction=False, soft_ratio_start=0.0)
    hpm |= dict(hpm_momentum_start=0.9, hpm_momentum_end=0.99, hpm_momentum_epochs=2)
    args = dict(max_steps=6, save_strategy="steps", save_steps=2)
    whole = tiny_model(**hpm)
    trainer = GPATrainer(
        model=whole, args=tiny_training_arguments(tmp_path / "whole", **args), train_dataset=RandomImages(4)
    )
    trainer.train()
    momenta = [entry["ema_momentum"] for entry in trainer.state.log_history if "loss" in entry]
    assert momenta == pytest.approx([0.9, 0.9, 0.945, 0.945, 0.99, 0.99])

    resumed = tiny_model(seed=1, **hpm)
    trainer = GPATrainer(
        model=resumed, args=tiny_training_arguments(tmp_path / "whole", **args), train_dataset=RandomImages(4)
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-4"))
    late = [entry["ema_momentum"] for entry in trainer.state.log_history if "loss" in entry and entry["step"] > 4]
    assert late == pytest.approx([0.99, 0.99])
    for name, tensor in resumed.teacher_loss_predictor.state_dict().items():
        torch.testing.assert_close(tensor, whole.teacher_loss_predictor.state_dict()[name], msg=name)
