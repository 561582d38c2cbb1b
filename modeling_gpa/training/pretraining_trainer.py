"""The [`Trainer`] stack that `GPATrainer` and `SimMIMTrainer` share: one mixin per concern, listed once.

`GPATrainer`'s docstring says what each base does and the order in which the overrides of one method run.
"""

from __future__ import annotations

from transformers import Trainer

from .device_inputs import DeviceDecodingMixin, PixelNormalizationMixin, UnreadableImagesMixin
from .guards import TrainingGuardsMixin
from .mask_schedule import MaskScheduleMixin
from .seeding import ProcessSeedsMixin
from .startup import StartupChecksMixin
from .streaming import StreamingTrainerMixin


class PretrainingTrainer(
    MaskScheduleMixin,
    ProcessSeedsMixin,
    StartupChecksMixin,
    StreamingTrainerMixin,
    UnreadableImagesMixin,
    PixelNormalizationMixin,
    DeviceDecodingMixin,
    TrainingGuardsMixin,
    Trainer,
):
    """[`Trainer`] for masked image modeling with the mixins above, for a model whose loss is a per-batch mean.

    Such a loss is divided by the gradient accumulation steps: accumulating two batches of ``B`` gives the loss and
    gradient of one batch of ``2B`` (``Trainer`` would otherwise read a model's ``**kwargs`` as "the model normalises
    over the whole accumulated batch itself"), and the model gets no ``num_items_in_batch``.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False


__all__ = ["PretrainingTrainer"]
