"""What a distributed run checks before training: a resume keeps the checkpoint's total batch, and every node sees
the same ``--output_dir``.

Each checkpoint records the world size and batch it was trained with ([`BatchGeometryCallback`], in
``trainer_state.json``'s ``stateful_callbacks``). A resume at the same total batch on another number of processes
continues exactly: one step is the same number of images, so the step, learning rate, mask schedule and images seen
all carry over (only the random crops and masks differ). A resume at another total batch is refused
([`check_resume_geometry`]): its steps would stand for other numbers of images.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass

import torch.distributed as dist
from transformers import TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Seconds a process looks for the file rank 0 wrote in --output_dir before calling the storage unshared (environment
# variable, default 60): an NFS client that looked the directory up before rank 0 created it may keep answering "no
# such file" until its attribute cache expires (acdirmin, 30 s by default).
SHARED_STORAGE_WAIT_VARIABLE = "GPA_SHARED_STORAGE_WAIT_S"
SHARED_STORAGE_PROBE = ".shared-storage-check"


def is_shared_storage_probe(name: str) -> bool:
    """Whether a file name in --output_dir is a check file of [`check_output_dir_is_shared`], which does not make the
    folder a used one (a node may list the folder before rank 0's deletion of it shows, on NFS up to seconds late)."""
    return name.startswith(SHARED_STORAGE_PROBE)


class DistributedSetupError(ValueError):
    """A distributed run that cannot go on as launched; the message says what to change."""


@dataclass(frozen=True)
class BatchGeometry:
    """Processes, images per process per forward, and forwards per optimizer step."""

    world_size: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int

    @classmethod
    def of(cls, args: TrainingArguments) -> BatchGeometry:
        return cls(args.world_size, args.train_batch_size, args.gradient_accumulation_steps)

    @property
    def total_train_batch_size(self) -> int:
        """Images per optimizer step over all processes."""
        return self.world_size * self.per_device_train_batch_size * self.gradient_accumulation_steps

    def describe(self) -> str:
        processes = "process" if self.world_size == 1 else "processes"
        steps = "step" if self.gradient_accumulation_steps == 1 else "steps"
        return (
            f"{self.world_size} {processes} x {self.per_device_train_batch_size} per device x "
            f"{self.gradient_accumulation_steps} accumulation {steps}"
        )


class BatchGeometryCallback(TrainerCallback, ExportableState):
    """Writes the run's [`BatchGeometry`] and total batch into every checkpoint's trainer state."""

    def __init__(self, world_size: int = 0, per_device_train_batch_size: int = 0, gradient_accumulation_steps: int = 0):
        self.geometry = BatchGeometry(world_size, per_device_train_batch_size, gradient_accumulation_steps)

    def on_train_begin(self, args, state, control, **kwargs):
        # After a resume has restored callback states: checkpoints from here on record this run's geometry.
        self.geometry = BatchGeometry.of(args)
        # A state resumed from a checkpoint of an older version has no entry, and Trainer's save looks for one.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def state(self) -> dict:
        geometry = self.geometry
        return {
            "args": {
                "world_size": geometry.world_size,
                "per_device_train_batch_size": geometry.per_device_train_batch_size,
                "gradient_accumulation_steps": geometry.gradient_accumulation_steps,
            },
            "attributes": {"total_train_batch_size": geometry.total_train_batch_size},
        }


def recorded_geometry(checkpoint: str) -> BatchGeometry | None:
    """The [`BatchGeometry`] a checkpoint was trained with, or None when it records none (older versions)."""
    with open(os.path.join(checkpoint, TRAINER_STATE_NAME)) as file:
        callbacks = json.load(file).get("stateful_callbacks") or {}
    recorded = callbacks.get(BatchGeometryCallback.__name__)
    if not recorded:
        return None
    return BatchGeometry(**recorded["args"])


def check_resume_geometry(checkpoint: str, args: TrainingArguments) -> None:
    """Refuses (one line) a resume at another total batch than the checkpoint's; logs one of another world size."""
    if not os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_NAME)):
        return  # not a checkpoint: Trainer says so
    saved, current = recorded_geometry(checkpoint), BatchGeometry.of(args)
    if saved is None:
        logger.warning(
            f"{checkpoint} records no world size or total batch (saved by an older version): resuming without checking "
            f"that this run's total batch ({current.total_train_batch_size}) is the one it was trained with."
        )
        return
    total = saved.total_train_batch_size
    if current.total_train_batch_size != total:
        raise DistributedSetupError(
            f"{checkpoint} was trained at a total batch of {total} ({saved.describe()}) but this run's is "
            f"{current.total_train_batch_size} ({current.describe()}), so its steps, learning rate and mask schedule "
            f"would not continue: resume with a total batch of {total} ({suggestion(total, current)}) or train in a "
            "new --output_dir."
        )
    if current != saved:
        logger.warning(
            f"Resuming {checkpoint} ({saved.describe()}) with {current.describe()}: the total batch is the same "
            f"({total}), so step, learning rate, mask schedule and images seen continue exactly; the random crops and "
            "masks drawn from here on differ."
        )


def suggestion(total: int, current: BatchGeometry) -> str:
    """Flags that bring ``current`` to ``total`` images per step, changing the accumulation steps if that is enough."""
    per_step = current.world_size * current.per_device_train_batch_size
    if total % per_step == 0:
        return f"--gradient_accumulation_steps {total // per_step}"
    per_process = current.world_size * current.gradient_accumulation_steps
    if total % per_process == 0:
        return f"--per_device_train_batch_size {total // per_process}"
    return "--per_device_train_batch_size x --gradient_accumulation_steps x processes"


def check_output_dir_is_shared(output_dir: str) -> None:
    """On several nodes: stops every process (one line) unless all of them see the file rank 0 writes in
    ``output_dir``. Checkpoints are written by rank 0 and read back by every process on resume. Collective call."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world_size, rank = dist.get_world_size(), dist.get_rank()
    if int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) == world_size:
        return  # one node: its processes share a filesystem
    token = [uuid.uuid4().hex if rank == 0 else None]
    dist.broadcast_object_list(token, src=0)
    probe = os.path.join(output_dir, f"{SHARED_STORAGE_PROBE}-{token[0]}")
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        with open(probe, "w") as file:
            file.write(token[0])
    dist.barrier()
    seen = _wait_for(probe, token[0])
    everyone = [None] * world_size
    dist.all_gather_object(everyone, seen)
    if rank == 0:
        os.remove(probe)
    # Nobody lists the folder before the check file is gone, as far as this filesystem shows deletions at once.
    dist.barrier()
    blind = [index for index, saw in enumerate(everyone) if not saw]
    if blind:
        raise DistributedSetupError(
            f"--output_dir {output_dir} must be shared storage: process rank(s) {', '.join(map(str, blind))} on other "
            "nodes do not see the file rank 0 wrote there, and every node resumes from the checkpoints rank 0 "
            "writes; put --output_dir on a filesystem all nodes mount (NFS, Lustre, ...)."
        )


def _wait_for(path: str, content: str) -> bool:
    deadline = time.monotonic() + float(os.environ.get(SHARED_STORAGE_WAIT_VARIABLE, "60"))
    while True:
        try:
            with open(path) as file:
                if file.read() == content:
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


__all__ = [
    "BatchGeometry",
    "BatchGeometryCallback",
    "DistributedSetupError",
    "check_output_dir_is_shared",
    "check_resume_geometry",
    "is_shared_storage_probe",
    "recorded_geometry",
]
