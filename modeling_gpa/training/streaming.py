"""Training on a streamed dataset with the Hugging Face ``Trainer``: one loader per process, its place in checkpoints.

[`StreamingTrainerMixin`] gives a [`StreamingImageDataset`] train split its own loader in every process: a
torchdata ``StatefulDataLoader`` wrapped by accelerate for device placement only. accelerate's own preparation would
either dispatch every batch from process 0 or split the stream a second time; the stream is already split by node
(`modeling_gpa.data.streaming.split_stream`). Each checkpoint gets ``stream_state_rank{N}.json`` per process, written
before ``Trainer``'s files (so a checkpoint with its ``trainer_state.json`` always has them): the loader's state (each
worker's shard and row, as `datasets` records them) and the number of processes. Resuming loads it into the new
loader instead of reading and discarding the batches already trained on, and refuses a different number of
processes in one line.
"""

from __future__ import annotations

import json
import os
from functools import partial

from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, seed_worker
from transformers.utils import logging

from ..data.streaming import StreamingImageDataset
from .distributed import DistributedSetupError
from .worker_signals import workers_ignore_sigterm

logger = logging.get_logger(__name__)

STREAM_STATE_NAME = "stream_state_rank{rank}.json"


def stream_state_path(checkpoint: str, rank: int) -> str:
    """The file of process ``rank``'s stream position in ``checkpoint``."""
    return os.path.join(checkpoint, STREAM_STATE_NAME.format(rank=rank))


class StreamingTrainerMixin:
    """[`Trainer`] mixin: a streamed train split is read by each process on its own and resumes where it stopped."""

    @property
    def streams_training_data(self) -> bool:
        return isinstance(self.train_dataset, StreamingImageDataset)

    def get_train_dataloader(self) -> DataLoader:
        if not self.streams_training_data:
            return super().get_train_dataloader()
        args = self.args
        loader = DataLoader(
            self.train_dataset,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            drop_last=args.dataloader_drop_last,
            # Trainer seeds map-style workers by rank too: the processes' crops and flips then differ.
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        self._stream_loader = prepare_data_loader(
            workers_ignore_sigterm(loader),
            device=self.accelerator.device if self.accelerator.device_placement else None,
            num_processes=1,
            process_index=0,
            non_blocking=self.accelerator.non_blocking,
            use_stateful_dataloader=True,
        )
        return self._stream_loader

    def get_resumed_dataloader(self, dataloader: DataLoader, num_batches: int) -> DataLoader:
        """The loader at the checkpoint's position in the stream: restored from its state, nothing read again."""
        if not self.streams_training_data:
            return super().get_resumed_dataloader(dataloader, num_batches)
        checkpoint = self._stream_checkpoint
        path = stream_state_path(checkpoint, self.args.process_index)
        if not os.path.isfile(path):
            logger.warning(
                f"{checkpoint} holds no stream position for process {self.args.process_index}: reading and "
                f"discarding the {num_batches} batches already trained on to find it."
            )
            return super().get_resumed_dataloader(dataloader, num_batches)
        with open(path) as file:
            saved = json.load(file)
        if saved["world_size"] != self.args.world_size:
            raise DistributedSetupError(
                f"{checkpoint} was written by {saved['world_size']} processes streaming their own shards, but this "
                f"run has {self.args.world_size}: resume with {saved['world_size']} processes, or start a new "
                "--output_dir"
            )
        dataloader.load_state_dict(saved["loader"])
        self.train_dataset.continue_from_epoch(saved["epoch"])
        logger.warning(f"Resuming the stream at its position in {checkpoint} (epoch {saved['epoch']}).")
        return dataloader

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        self._stream_checkpoint = resume_from_checkpoint
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        if self.streams_training_data and getattr(self, "_stream_loader", None) is not None:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            os.makedirs(folder, exist_ok=True)
            saved = {
                "world_size": self.args.world_size,
                "epoch": self.train_dataset.epoch,
                "loader": self._stream_loader.state_dict(),
            }
            with open(stream_state_path(folder, self.args.process_index), "w") as file:
                json.dump(saved, file)
        super()._save_checkpoint(model, trial)


__all__ = ["STREAM_STATE_NAME", "StreamingTrainerMixin", "stream_state_path"]
