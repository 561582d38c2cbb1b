"""Randomness per process, as MAE has it (``seed = args.seed + misc.get_rank()`` in ``main_pretrain.py`` and
``main_finetune.py``).

The model is built with the shared ``--seed`` (every process starts from the same weights), then each process reseeds
Python, NumPy and torch with ``seed + rank`` before any data or mask is drawn: no two processes draw the same crop,
flip, mask, soft-sampling noise or Mixup/CutMix lambda. The order of the training images stays shared: the sampler
that splits each epoch between the processes is seeded by ``--data_seed`` (``--seed`` when not given), so every
process shuffles the same way and takes its own share. A resume restores each process's own RNG state (``Trainer``
writes ``rng_state_<rank>.pth`` per process).
"""

from __future__ import annotations

from transformers import set_seed
from transformers.utils import logging

logger = logging.get_logger(__name__)


def process_seed(seed: int, process_index: int) -> int:
    """The seed of process ``process_index`` of a run seeded with ``seed``."""
    return seed + process_index


class ProcessSeedsMixin:
    """[`Trainer`] mixin: the data and masks of each process are drawn from ``seed + rank`` (see the module).

    ``Trainer.__init__`` seeds every process with ``--seed``, after the model was built; this mixin reseeds each
    process at the end of it, and keeps the shared epoch order by seeding the sampler with ``--seed`` when
    ``--data_seed`` is unset.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dataloader_config = self.accelerator.dataloader_config
        if dataloader_config.data_seed is None:
            # accelerate's sampler would otherwise take torch's initial seed, which differs per process below.
            dataloader_config.data_seed = self.args.seed
        seed = process_seed(self.args.seed, self.args.process_index)
        set_seed(seed)
        if self.args.world_size > 1:
            logger.info(f"Process {self.args.process_index} draws its data and masks from seed {seed}.")


__all__ = ["ProcessSeedsMixin", "process_seed"]
