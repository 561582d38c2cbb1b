"""GPA pretraining with the Hugging Face ``Trainer``: schedule progress, EMA teacher steps, loss-part logging.

[`GPATrainer`] feeds the soft-to-hard schedule its progress ``p = global_step / max_steps`` on every forward (training
and evaluation), steps the EMA teacher once per optimizer step, divides the per-batch mean loss by the gradient
accumulation steps, and logs ``pixel_loss``, ``gpa_loss``, ``hpm_loss`` and the hard / soft / random fractions in
use. Its batches are the input pipeline's uint8 images, normalised on the device
(`modeling_gpa.training.device_inputs`).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments
from transformers.trainer_utils import EvalLoopOutput
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, logging

from ..masking import progress_tensor
from .flag_ranges import TRAINING_FLAG_RANGES, check_flag_ranges
from .pretraining_trainer import PretrainingTrainer

logger = logging.get_logger(__name__)

MASK_SCHEDULES = ("step", "epoch")
FRACTION_NAMES = ("hard_fraction", "soft_fraction", "random_fraction")
# DataLoader settings when --dataloader_num_workers > 0 and the flags are not given: workers live across epochs and
# each keeps this many batches ready, so the accelerator never waits for a worker to start or to catch up.
DEFAULT_PREFETCH_FACTOR = 4


@dataclass
class GPATrainingArguments(TrainingArguments):
    """[`TrainingArguments`] plus GPA's: base learning rate, mask schedule granularity, output-dir overwrite.

    Defaults differ from [`TrainingArguments`] where image pretraining needs it: ``remove_unused_columns=False``
    (the model takes ``pixel_values`` from a transformed dataset), ``label_names=["pixel_values"]`` (so evaluation
    reports ``eval_loss``) and ``prediction_loss_only=True`` (evaluation keeps no per-pixel predictions in memory).
    """

    base_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": (
                "Base learning rate (as in run_mae.py): when set, learning_rate = base_learning_rate * "
                "total_train_batch_size / 256, with total_train_batch_size = per_device_train_batch_size * "
                "gradient_accumulation_steps * number of processes. It wins over --learning_rate."
            )
        },
    )
    mask_schedule: str = field(
        default="step",
        metadata={
            "help": (
                "Granularity of the soft-to-hard schedule's progress p: 'step' (p = global_step / max_steps) or "
                "'epoch' (p = completed epochs / num_train_epochs, as the paper's Eq. 6 and the released code)."
            ),
            "choices": list(MASK_SCHEDULES),
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": (
                "Train from scratch in a non-empty --output_dir instead of resuming from its last checkpoint "
                "(or refusing to start when it holds no checkpoint)."
            )
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Drop dataset columns the model does not take; False: the image transforms need them."},
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["pixel_values"],
        metadata={"help": "Input keys treated as labels; pixel_values, so evaluation computes eval_loss."},
    )
    prediction_loss_only: bool = field(
        default=True,
        metadata={"help": "Evaluate the loss only, keeping no reconstructed pixels of the evaluation set in memory."},
    )
    dataloader_persistent_workers: bool | None = field(
        default=None,
        metadata={
            "help": "Keep the DataLoader workers alive between epochs. Unset: true when --dataloader_num_workers > 0."
        },
    )
    dataloader_prefetch_factor: int | None = field(
        default=None,
        metadata={
            "help": (
                "Batches each DataLoader worker keeps ready. Unset: "
                f"{DEFAULT_PREFETCH_FACTOR} when --dataloader_num_workers > 0."
            )
        },
    )

    resume_from_weights_only: bool = field(
        default=False,
        metadata={
            "help": (
                "Resume from a checkpoint that lacks optimizer.pt, scheduler.pt or trainer_state.json (one saved with "
                "--save_only_model, or copied without them): its weights load and what is missing starts afresh, "
                "as a warning says (AdamW's moments, the learning-rate schedule, the step count). Without it such a "
                "checkpoint is skipped as incomplete."
            )
        },
    )
    max_nonfinite_steps: int = field(
        default=10,
        metadata={
            "help": (
                "An optimizer step whose loss or gradients are NaN or inf is skipped (weights and optimizer state "
                "unchanged) and counted; this many skipped steps in a row stop training with an error naming the step."
            )
        },
    )

    def __post_init__(self):
        # Before anything else: Transformers and torch would find a bad number only once training starts.
        check_flag_ranges(self, TRAINING_FLAG_RANGES)
        _refuse_fsdp_without_gpus()
        if (
            not self.use_cpu
            and _world_size_from_launcher() > 1
            and not torch.cuda.is_available()
            and not _deepspeed_from_launcher()
        ):
            # A launcher started several processes on a machine without GPUs (e.g. accelerate's cpu_2proc.yaml):
            # without use_cpu each would train alone as rank 0 instead of joining one gloo process group.
            # DeepSpeed runs on its CPU accelerator (DS_ACCELERATOR=cpu) only when use_cpu stays off.
            self.use_cpu = True
        self._set_loader_defaults()
        super().__post_init__()
        on_cuda = not self.use_cpu and torch.cuda.is_available()
        if on_cuda and self.dataloader_num_workers == 0:
            logger.warning(
                "--dataloader_num_workers is 0: the training process decodes every image itself and the GPU waits "
                "for it. Pass --dataloader_num_workers N (about the CPU cores per GPU, minus one)."
            )
        if on_cuda and self.dataloader_pin_memory:
            # Pinned batches can be copied to the GPU asynchronously, overlapping the copy with the running step.
            self.accelerator_config.non_blocking = True
        if self.mask_schedule not in MASK_SCHEDULES:
            raise ValueError(
                f"--mask_schedule {self.mask_schedule!r} is invalid; allowed values: {', '.join(MASK_SCHEDULES)}."
            )
        if self.base_learning_rate is not None:
            default_rate = TrainingArguments.__dataclass_fields__["learning_rate"].default
            if self.learning_rate != default_rate:
                logger.warning(
                    f"--learning_rate {self.learning_rate} is ignored: --base_learning_rate {self.base_learning_rate}"
                    " sets the learning rate."
                )
            self.learning_rate = self.base_learning_rate * self.total_train_batch_size / 256
            logger.info(
                f"learning_rate = base_learning_rate {self.base_learning_rate} * total batch size "
                f"{self.total_train_batch_size} / 256 = {self.learning_rate:g}"
            )

    def _set_loader_defaults(self) -> None:
        """Persistent workers and a prefetch factor when there are workers, unless the flags were given; pinned
        memory only where there is a GPU to copy to."""
        if self.use_cpu or not torch.cuda.is_available():
            self.dataloader_pin_memory = False
        workers = self.dataloader_num_workers > 0
        if self.dataloader_persistent_workers is None:
            self.dataloader_persistent_workers = workers
        if self.dataloader_prefetch_factor is None and workers:
            self.dataloader_prefetch_factor = DEFAULT_PREFETCH_FACTOR

    @property
    def total_train_batch_size(self) -> int:
        """Images per optimizer step over all processes."""
        return self.train_batch_size * self.gradient_accumulation_steps * self.world_size


def _world_size_from_launcher() -> int:
    """Number of processes torchrun / accelerate launch started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _deepspeed_from_launcher() -> bool:
    """Whether ``accelerate launch`` was given a DeepSpeed config (e.g. deepspeed_zero2.yaml)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _refuse_fsdp_without_gpus() -> None:
    """accelerate shards with FSDP only on GPUs: elsewhere it would quietly run DDP (or one process per rank)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not torch.cuda.is_available():
        raise ValueError(
            "FSDP (fsdp.yaml) needs GPUs: accelerate runs FSDP only on GPUs and on this machine would train with "
            "DDP instead; launch with run_scripts/accelerate_configs/cpu_2proc.yaml on a machine without GPUs."
        )


class EMATeacherCallback(TrainerCallback):
    """Steps the model's EMA copy after each optimizer step, with the index of the epoch the step belongs to.

    ``on_step_end`` fires once per optimizer step, after ``optimizer.step()``, never per accumulated micro-batch.
    ``state.epoch`` is restored on resume, so a momentum schedule (HPM's) goes on where it was. ``momentum`` is the
    last momentum used (``None`` without an EMA copy), for the logs.
    """

    momentum: float | None = None

    def on_step_end(self, args, state, control, model: nn.Module | None = None, **kwargs):
        epoch = max(math.ceil((state.epoch or 0.0) - 1e-9) - 1, 0)
        self.momentum = extract_model_from_parallel(model).update_teacher(epoch)


class RunningMeans:
    """Weighted sums of named scalars since the last reset, averaged over all processes on demand."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.weight = 0.0

    def add(self, values: dict[str, torch.Tensor | float], weight: float = 1.0) -> None:
        """Accumulates ``weight * value`` for each name; tensors stay on their device (no host sync per step)."""
        for name, value in values.items():
            value = value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value))
            self.sums[name] = self.sums.get(name, 0.0) + weight * value
        self.weight += weight

    def pop(self, accelerator) -> dict[str, float]:
        """Means over everything added since the last ``pop`` on every process; then resets. Collective call."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        device = accelerator.device
        totals = torch.stack([torch.as_tensor(self.sums[name], device=device).float() for name in names])
        totals = torch.cat([totals, torch.tensor([self.weight], device=device)])
        totals = accelerator.reduce(totals, reduction="sum")
        self.sums, self.weight = {}, 0.0
        return {name: (total / totals[-1]).item() for name, total in zip(names, totals[:-1], strict=True)}


def _has_safetensors(checkpoint: str) -> bool:
    return any(os.path.isfile(os.path.join(checkpoint, name)) for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME))


def restore_weights(model: PreTrainedModel, checkpoint: str) -> None:
    """Copies every weight of ``checkpoint`` into ``model`` in place (strict: each tensor must be there)."""
    saved = type(model).from_pretrained(checkpoint, config=copy.deepcopy(model.config), dtype=model.dtype)
    model.load_state_dict(saved.state_dict())


class GPATrainer(PretrainingTrainer):
    """[`Trainer`] for [`GPAForPreTraining`].

    - Every forward gets ``mask_progress`` = [`MaskScheduleMixin.mask_progress`]; evaluation uses the progress
      reached so far.
    - The EMA teacher is stepped once per optimizer step ([`EMATeacherCallback`]).
    - The model's loss is a per-batch mean, so it is divided by the gradient accumulation steps
      ([`PretrainingTrainer`]).
    - Training logs add ``pixel_loss``, ``gpa_loss``, ``hpm_loss`` (the terms in use) and the
      ``hard/soft/random_fraction`` in use, averaged over the logging interval, and the EMA copy's ``ema_momentum``;
      evaluation adds ``eval_pixel_loss``, ``eval_gpa_loss`` and ``eval_hpm_loss``.
    - uint8 batches are normalised on the device ([`PixelNormalizationMixin`]); images that could not be decoded are
      counted, logged at the end of training and reported as ``train_unreadable_images`` / ``eval_unreadable_images``.

    The stack: the bases of [`PretrainingTrainer`] (`SimMIMTrainer` shares them; `FinetuneTrainer` in
    run_finetune.py takes the seeding and the three device-input mixins), one concern each, outermost first:

    - [`MaskScheduleMixin`] (``mask_schedule``): ``mask_progress``.
    - [`ProcessSeedsMixin`] (``seeding``): ``__init__`` reseeds each process with ``seed + rank``.
    - [`StartupChecksMixin`] (``startup``): ``train`` checks, once, the shared ``output_dir``, the checkpoint and its
      total batch; ``__init__`` records the batch geometry in checkpoints.
    - [`StreamingTrainerMixin`] (``streaming``): the loader of a streamed split, its position in checkpoints.
    - [`UnreadableImagesMixin`], [`PixelNormalizationMixin`], [`DeviceDecodingMixin`] (``device_inputs``): what
      ``_prepare_inputs`` does to a batch on the device.
    - [`TrainingGuardsMixin`] (``guards``): finite-loss guard, no non-finite saves, checkpoint and stop on SIGTERM
      (agreed every ``SIGTERM_CHECK_STEPS`` steps on several processes), free space, Hub token.

    Where several override one method, each calls ``super()``, so they run in this order (outermost first):

    - ``__init__``: every one after ``Trainer.__init__`` has returned, innermost first: guards, unreadable-files
      callback, batch-geometry callback, reseeding, ``PretrainingTrainer`` (no loss kwargs), then this class (EMA
      callback, loss means).
    - ``train``: this class (unreadable count after training) > startup checks (resolves
      ``resume_from_checkpoint=True``, checks the checkpoint holds this model) > streaming (notes the checkpoint for
      its loader) > guards (free space, SIGTERM handler; raises [`TrainingInterrupted`] after) > ``Trainer``.
    - ``get_train_dataloader``: streaming (its own loader for a stream) > guards (workers that ignore SIGTERM) >
      ``Trainer``.
    - ``_save_checkpoint``: streaming (the stream positions, before ``Trainer``'s files) > unreadable images (gathers
      every process's names into the state) > guards (no Hub token in the saved arguments) > ``Trainer``.
    - ``_prepare_inputs``: ``Trainer`` moves the batch to the device; on its result the device decoding decodes
      JPEGs, then the normalisation turns uint8 into floats, then the unreadable names leave the batch.
    - Only the guards override ``training_step`` (notes a non-finite loss), ``_get_grad_norm`` (skips a non-finite
      step), ``_maybe_log_save_evaluate`` (the SIGTERM check), ``get_eval_dataloader`` and ``save_model``; only this
      class ``compute_loss``, ``log``, ``evaluation_loop`` and the checkpoint loads.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_callback = EMATeacherCallback()
        self.add_callback(self.ema_callback)
        self._train_means = RunningMeans()
        self._eval_means = RunningMeans()

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``, whose metrics add ``train_unreadable_images`` (logged when not 0).

        Step, schedules, weights, EMA teacher, optimizer and the images of every later step always continue exactly on
        resume. The random draws after the checkpoint (crops, flips, masks) are the uninterrupted run's only from a
        checkpoint at an epoch boundary, with the loader in this process or without persistent workers: inside an
        epoch ``Trainer``'s dataloader drew the next batch's augmentation before the RNG state was saved, and
        persistent workers carry their own random state across epochs.
        """
        output = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        unreadable = self.total_unreadable_images("train")
        if unreadable:
            logger.warning(
                f"Skipped {unreadable} unreadable training images (the next image took each one's place); the "
                "warnings above name them. --strict_images stops at the first one instead."
            )
        output.metrics["train_unreadable_images"] = unreadable
        return output

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Restores the weights of a checkpoint, renaming its keys as ``from_pretrained`` does.

        ``save_pretrained`` writes ViT weights under their original Hub names (``encoder.layer.0.attention...``) but
        ``Trainer`` reloads them with a plain non-strict ``load_state_dict``, which silently keeps the fresh weights
        of every renamed key (huggingface/transformers#48805). FSDP checkpoints keep ``Trainer``'s own loader.
        """
        if self.is_fsdp_enabled or not _has_safetensors(resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        logger.info(f"Loading model from {resume_from_checkpoint}.")
        restore_weights(extract_model_from_parallel(model if model is not None else self.model), resume_from_checkpoint)

    def _load_best_model(self) -> None:
        """``Trainer``'s best-model reload, with the key renaming of [`_load_from_checkpoint`]."""
        best = self.state.best_model_checkpoint
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not _has_safetensors(best):
            super()._load_best_model()
            return
        logger.info(f"Loading best model from {best} (score: {self.state.best_metric}).")
        restore_weights(extract_model_from_parallel(self.model), best)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Forward with the current ``mask_progress``; records the loss parts for logging."""
        progress = self.mask_progress()
        # A 0-d tensor, not a float: under --torch_compile a new float each step would recompile the model.
        # nn.DataParallel (several GPUs, one process) splits tensor arguments along dim 0, so it gets the float.
        model_progress = progress if self.args.n_gpu > 1 else progress_tensor(progress, self.args.device)
        outputs = model(**inputs, mask_progress=model_progress)
        parts = {"pixel_loss": outputs.pixel_loss}
        for name in ("gpa_loss", "hpm_loss"):
            if getattr(outputs, name) is not None:
                parts[name] = getattr(outputs, name)
        if model.training:
            fractions = extract_model_from_parallel(model).mask_fractions(progress)
            self._train_means.add({**parts, **dict(zip(FRACTION_NAMES, fractions, strict=True))})
        else:
            self._eval_means.add(parts, weight=len(inputs["pixel_values"]))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the interval means of the loss parts and mask fractions to each training log."""
        if "loss" in logs:
            logs.update(self._train_means.pop(self.accelerator))
            if self.ema_callback.momentum is not None:
                logs["ema_momentum"] = self.ema_callback.momentum
        super().log(logs, start_time)

    def evaluation_loop(
        self,
        dataloader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """``Trainer``'s loop, plus ``{prefix}_pixel_loss``, ``_gpa_loss`` and ``_hpm_loss`` averaged per image."""
        self._eval_means = RunningMeans()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        for name, value in self._eval_means.pop(self.accelerator).items():
            output.metrics[f"{metric_key_prefix}_{name}"] = value
        unreadable = self.total_unreadable_images("eval")
        self.unreadable_files["eval"].clear()
        output.metrics[f"{metric_key_prefix}_unreadable_images"] = unreadable
        return output


__all__ = [
    "GPATrainer",
    "GPATrainingArguments",
    "EMATeacherCallback",
    "RunningMeans",
    "restore_weights",
]
