"""What run_pretrain.py and run_mim.py share around their models: logging, the checkpoint to resume, the image
processor, and the train / evaluate steps with their one-line exits. Their flags are in
`modeling_gpa.training.arguments`, their image splits in `modeling_gpa.data.splits`."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator

import datasets
import transformers
from transformers import AutoImageProcessor, BaseImageProcessor, PretrainedConfig, Trainer, TrainingArguments

from ..checkpoint_files import TRAINER_STATE_NAME, ResumeRefused
from ..command_line import check_checkpoint, pickle_refusal
from ..data import build_image_processor
from ..data.pipeline import UnreadableImageError
from ..data.splits import logger as splits_logger
from .arguments import HubArguments, hub_kwargs
from .distributed import DistributedSetupError, is_shared_storage_probe
from .guards import NonFiniteTrainingError, NotEnoughSpace, TrainingInterrupted
from .resume import check_resumable_once, checkpoint_dirs, last_complete_checkpoint
from .startup import check_output_dir_is_shared_once

logger = logging.getLogger(__name__)


def checkpoint_to_resume(training_args: TrainingArguments) -> str | None:
    """--resume_from_checkpoint, else the last complete checkpoint in --output_dir (as run_mae.py does).

    On several nodes, first stops (one line) unless every node sees the same --output_dir, before any data loads.
    The trainer's ``train`` does not repeat these checks (`modeling_gpa.training.startup`)."""
    if training_args.do_train:
        check_output_dir_is_shared_once(training_args.output_dir)
    weights_only = training_args.resume_from_weights_only
    if training_args.resume_from_checkpoint is not None:
        return check_resumable_once(training_args.resume_from_checkpoint, weights_only)
    output_dir = training_args.output_dir
    if not (training_args.do_train and os.path.isdir(output_dir)) or training_args.overwrite_output_dir:
        return None
    checkpoint = last_complete_checkpoint(output_dir, weights_only)
    # A checkpoint cut off while saving (Trainer writes trainer_state.json last) was named above and holds nothing to
    # resume; anything else (other files, a checkpoint skipped for another reason) is work a fresh start would lose.
    cut_off = {
        os.path.basename(path)
        for _, path in checkpoint_dirs(output_dir)
        if not os.path.isfile(os.path.join(path, TRAINER_STATE_NAME))
    }
    kept = [name for name in os.listdir(output_dir) if name not in cut_off and not is_shared_storage_probe(name)]
    if checkpoint is None and kept:
        raise ValueError(
            f"Output directory ({output_dir}) already exists and is not empty. Use --overwrite_output_dir to train "
            "from scratch there, or pick another --output_dir."
        )
    if checkpoint is not None:
        logger.info(
            f"Checkpoint detected, resuming training at {checkpoint}. To avoid this behavior, change the "
            "`--output_dir` or add `--overwrite_output_dir` to train from scratch."
        )
    return checkpoint


# The flags of both scripts that name a checkpoint directory (or Hub id) to read.
CHECKPOINT_FLAGS = ("model_name_or_path", "config_name", "config_name_or_path", "gpa_teacher_name_or_path")


def check_checkpoint_flags(model_args: HubArguments) -> None:
    """[`check_checkpoint`] of each local directory named by ``CHECKPOINT_FLAGS`` in ``model_args``, before any data
    loads: weights that cannot load, or code of its own without --trust_remote_code, end in one line."""
    for flag in CHECKPOINT_FLAGS:
        check_checkpoint(getattr(model_args, flag, None), model_args.trust_remote_code, f"--{flag}")


def setup_logging(training_args: TrainingArguments, script_logger: logging.Logger) -> None:
    """Log lines to stdout, at the process's level (replicas: warnings only) for the script, this module, the data
    splits and the libraries."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    script_logger.setLevel(log_level)
    logger.setLevel(log_level)
    splits_logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def one_line(error: Exception) -> str:
    """The message of an error raised in a DataLoader worker, without the worker traceback torch wraps around it."""
    last = str(error).strip().splitlines()[-1]
    prefix = f"{type(error).__name__}: "
    return last[len(prefix) :] if last.startswith(prefix) else last


def train_and_evaluate(trainer: Trainer, training_args: TrainingArguments, checkpoint: str | None) -> dict:
    """--do_train (then save model, metrics and state) and --do_eval; the metrics of both."""
    metrics = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        # Warning level, like the "Process rank" line: replicas log nothing below it.
        logger.warning(f"Process rank {training_args.process_index}: trained to step {trainer.state.global_step}.")
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        metrics.update(train_result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics


def build_image_processor_for(model_args: HubArguments, config: PretrainedConfig) -> BaseImageProcessor:
    """--image_processor_name, else --model_name_or_path's, else a new one; resized to the model's image size.

    ``model_args`` also has ``model_name_or_path``; ``config`` gives ``image_size`` and ``num_channels``.
    """
    source = model_args.image_processor_name or model_args.model_name_or_path
    processor = None
    if source:
        try:
            processor = AutoImageProcessor.from_pretrained(source, **hub_kwargs(model_args))
        except OSError:
            if model_args.image_processor_name:
                raise
    if processor is None:
        return build_image_processor(config.image_size, config.num_channels)
    if len(processor.image_mean) not in (1, config.num_channels):
        raise ValueError(
            f"image processor mean {processor.image_mean} does not fit num_channels={config.num_channels}: pass "
            "--image_processor_name with a matching one, or --num_channels."
        )
    processor.size = {"height": config.image_size, "width": config.image_size}
    return processor


def start(parse_arguments: Callable[[list[str] | None], tuple], argv: list[str] | None, script_logger: logging.Logger):
    """The script's arguments from ``parse_arguments(argv)``, with logging set up and the process line logged."""
    model_args, data_args, training_args = parse_arguments(argv)
    setup_logging(training_args, script_logger)
    script_logger.warning(process_summary(training_args))
    return model_args, data_args, training_args


def train_or_exit(script: str, trainer: Trainer, training_args: TrainingArguments, checkpoint: str | None) -> dict:
    """[`train_and_evaluate`]; an unreadable image (with --strict_images), the training guards' stops
    ([`exit_on_training_failure`]) and a distributed setup that cannot go on (`modeling_gpa.training.distributed`)
    end the process with one line."""
    try:
        with exit_on_training_failure(script, trainer):
            return train_and_evaluate(trainer, training_args, checkpoint)
    except (UnreadableImageError, DistributedSetupError) as error:
        sys.exit(f"{script}: error: {one_line(error)}")


@contextlib.contextmanager
def exit_on_training_failure(script: str, trainer: Trainer) -> Iterator[None]:
    """Ends the process with one line when training cannot go on: SIGTERM (exit 143, after its checkpoint),
    non-finite loss or weights, a full or read-only disk, a checkpoint that cannot be loaded or unpickled or holds
    another model."""
    try:
        yield
    except TrainingInterrupted as error:
        # One write per line: every rank reports, and two ranks' print() calls (text, then newline) could interleave.
        sys.stderr.write(f"{script}: {error}\n")
        sys.stderr.flush()
        sys.exit(error.exit_code)
    except (NonFiniteTrainingError, NotEnoughSpace, ResumeRefused) as error:
        sys.exit(f"{script}: error: {error}")
    except pickle.UnpicklingError as error:
        sys.exit(f"{script}: error: {pickle_refusal(error)}")
    except Exception as error:
        if not is_write_failure(error):
            raise
        output_dir = trainer.args.output_dir
        free = shutil.disk_usage(output_dir).free / 2**20 if os.path.isdir(output_dir) else 0.0
        sys.exit(
            f"{script}: error: writing to --output_dir {output_dir} failed at step {trainer.state.global_step} "
            f"({one_line(error)}; {free:.1f} MiB free): free some space or pick another --output_dir; the "
            "checkpoints written before it are intact and the same command resumes from the last one"
        )


# Errors of a write that the disk refused: OSError numbers, and the messages of safetensors (which raises its own
# error type) and of torch.save (whose zip writer reports only an offset).
WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EFBIG)
WRITE_FAILURE_MESSAGES = (
    "No space left on device",
    "Read-only file system",
    "Error while serializing",
    "inline_container",
)


def is_write_failure(error: BaseException) -> bool:
    """Whether ``error`` means the disk refused a write (full, read-only, quota), as far as its type and text say."""
    if isinstance(error, OSError):
        return error.errno in WRITE_ERRNOS
    return any(message in str(error) for message in WRITE_FAILURE_MESSAGES)


def check_output_dir_writable(training_args: TrainingArguments) -> None:
    """Raises ``OSError`` (one line) before any data is read when --output_dir cannot be created or written to."""
    if not (training_args.should_save and training_args.output_dir):
        return
    output_dir = training_args.output_dir
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise OSError(
            f"--output_dir {output_dir} is not writable ({error.strerror or error}): pick another --output_dir, or "
            "make it writable"
        ) from None


def process_summary(training_args: TrainingArguments) -> str:
    """One line on this process: rank, device, GPUs, whether training is distributed, mixed precision."""
    return (
        f"Process rank: {training_args.process_index}, device: {training_args.device}, n_gpu: "
        f"{training_args.n_gpu}, distributed training: {training_args.parallel_mode.value == 'distributed'}, "
        f"mixed precision: {training_args.mixed_precision}"
    )
