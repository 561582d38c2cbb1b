"""What a [`Trainer`] does to the input pipeline's batches once they are on the device: one mixin per concern.

- [`DeviceDecodingMixin`]: batches of ``--image_decoding device`` carry undecoded JPEGs; they are decoded, cropped and
  flipped on the device (`modeling_gpa.data.device_decoding.decode_on_device`), and the FLOPs estimate counts their
  pixels before they exist.
- [`PixelNormalizationMixin`]: uint8 ``pixel_values`` become floats of the model's dtype with the image processor's
  mean and std ([`PixelNormalizer`]).
- [`UnreadableImagesMixin`]: the names of images that could not be decoded (listed by the pipeline, or by the device
  decoding, under ``unreadable_images``) leave the batch and are counted once per split, kept in every checkpoint.

Each overrides ``_prepare_inputs`` (``Trainer`` calls it in ``training_step`` and ``prediction_step``) around
``Trainer``'s, which puts the batch on the device. In a trainer's bases [`DeviceDecodingMixin`] comes after the other
two, so its decoded pixels are normalised and its failures counted.
"""

from __future__ import annotations

import torch
from accelerate.utils import extract_model_from_parallel, gather_object
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..data.device_decoding import JpegDecoder, decode_on_device, nvjpeg_decoder
from ..data.encoded_images import ENCODED_KEY
from ..data.image_inputs import ImageSettings
from ..data.pipeline import UNREADABLE_KEY, PixelNormalizer


class DeviceDecodingMixin:
    """[`Trainer`] mixin: JPEGs still encoded in a batch are decoded on the device with [`jpeg_decoder`].

    The names of the images that fail to decode are added to the batch's ``unreadable_images`` (for
    [`UnreadableImagesMixin`]); their places hold the next readable image, as on the CPU.
    """

    def _prepare_inputs(self, inputs: dict) -> dict:
        inputs = super()._prepare_inputs(inputs)
        encoded = inputs.pop(ENCODED_KEY, None)
        if encoded is not None:
            inputs["pixel_values"], failed = decode_on_device(
                encoded, inputs.get("pixel_values"), self.accelerator.device, self.jpeg_decoder
            )
            if failed:
                inputs[UNREADABLE_KEY] = [*inputs.get(UNREADABLE_KEY, ()), *failed]
        return inputs

    @property
    def jpeg_decoder(self) -> JpegDecoder:
        """Decodes the JPEGs of device-decoding batches: torchvision's batched nvJPEG unless one was assigned."""
        if "_jpeg_decoder" not in self.__dict__:
            self._jpeg_decoder = nvjpeg_decoder(self.accelerator.device)
        return self._jpeg_decoder

    @jpeg_decoder.setter
    def jpeg_decoder(self, decoder: JpegDecoder) -> None:
        self._jpeg_decoder = decoder

    def floating_point_ops(self, inputs: dict) -> int:
        """Trainer's estimate, counting the pixels of a batch whose JPEGs are still undecoded."""
        encoded = inputs.get(ENCODED_KEY)
        if encoded is not None:
            inputs = {**inputs, "pixel_values": torch.empty(encoded.shape, dtype=torch.uint8, device="meta")}
        return super().floating_point_ops(inputs)


class PixelNormalizationMixin:
    """[`Trainer`] mixin: uint8 ``pixel_values`` become floats of [`pixel_dtype`], normalised by [`pixel_normalizer`]:
    the mean and std of the trainer's image processor (``processing_class``), else the defaults for the model's
    channels."""

    def _prepare_inputs(self, inputs: dict) -> dict:
        inputs = super()._prepare_inputs(inputs)
        pixel_values = inputs.get("pixel_values")
        if pixel_values is not None and pixel_values.dtype == torch.uint8:
            inputs["pixel_values"] = self.pixel_normalizer(pixel_values).to(self.pixel_dtype)
        return inputs

    @property
    def pixel_dtype(self) -> torch.dtype:
        """dtype of the normalised pixels: the DeepSpeed engine's, else the model's weights'.

        ``Trainer`` casts the floating inputs of a DeepSpeed batch to the engine's dtype (its bf16 or fp16 weights)
        before this mixin makes the uint8 pixels floating, so they get that dtype here. Without DeepSpeed, an fp32
        model keeps fp32 pixels (autocast and FSDP's mixed precision cast them themselves) and a model loaded in
        bf16 gets bf16 ones.
        """
        if getattr(self, "is_deepspeed_enabled", False):
            return self.accelerator.state.deepspeed_plugin.hf_ds_config.dtype()
        return extract_model_from_parallel(self.model).dtype

    @property
    def pixel_normalizer(self) -> PixelNormalizer:
        """uint8 -> float32 with the processor's (else the default) mean and std, built on first use."""
        if "_pixel_normalizer" not in self.__dict__:
            processor = self.processing_class
            settings = ImageSettings.for_config(
                extract_model_from_parallel(self.model).config,
                getattr(processor, "image_mean", None),
                getattr(processor, "image_std", None),
            )
            self._pixel_normalizer = settings.normalizer()
        return self._pixel_normalizer


class UnreadableImagesMixin:
    """[`Trainer`] mixin: the names a batch lists under ``unreadable_images`` leave it and are added to
    ``unreadable_files["train"]`` or ``["eval"]``.

    Only batches that are trained on (or evaluated) count, and each file once however often it is met. The training
    set of names is saved in every checkpoint ([`UnreadableFilesCallback`]) and restored on resume.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(UnreadableFilesCallback(self.unreadable_files))

    def _prepare_inputs(self, inputs: dict) -> dict:
        inputs = super()._prepare_inputs(inputs)
        unreadable = inputs.pop(UNREADABLE_KEY, ())
        if unreadable:
            self.unreadable_files["train" if self.model.training else "eval"].update(unreadable)
        return inputs

    @property
    def unreadable_files(self) -> dict[str, set[str]]:
        """Names of the images of this process's batches that could not be decoded and were replaced, per split."""
        if "_unreadable_files" not in self.__dict__:
            self._unreadable_files = {"train": set(), "eval": set()}
        return self._unreadable_files

    @property
    def unreadable_images(self) -> dict[str, int]:
        """How many distinct images of this process's batches could not be decoded, per split."""
        return {split: len(names) for split, names in self.unreadable_files.items()}

    def total_unreadable_images(self, split: str) -> int:
        """How many distinct files of ``split`` were unreadable on any process. Collective call."""
        return len(self._gather_unreadable(split))

    def _gather_unreadable(self, split: str) -> set[str]:
        """``unreadable_files[split]`` of every process, united (and stored here). Collective call."""
        names = self.unreadable_files[split]
        if self.accelerator.num_processes > 1:
            names.update(gather_object(sorted(names)))
        return names

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        """``Trainer``'s checkpoint, whose state records the unreadable training files of every process."""
        self._gather_unreadable("train")
        super()._save_checkpoint(model, trial)


class UnreadableFilesCallback(TrainerCallback, ExportableState):
    """Keeps a trainer's unreadable training files in ``trainer_state.json`` and restores them on resume.

    ``Trainer`` saves the ``state()`` of such callbacks in every checkpoint; ``on_train_begin`` runs after a resumed
    run loaded the checkpoint's state, so the names found before the checkpoint are counted once, not lost.
    """

    def __init__(self, files: dict[str, set[str]]) -> None:
        self.files = files

    def state(self) -> dict:
        return {"args": {}, "attributes": {"train": sorted(self.files["train"])}}

    def on_train_begin(self, args, state, control, **kwargs):
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name)
        if isinstance(saved, dict):
            self.files["train"].update(saved.get("attributes", {}).get("train", []))
        # A checkpoint written before this callback existed has no entry, and Trainer's save expects one.
        state.stateful_callbacks[name] = self.state()


__all__ = ["DeviceDecodingMixin", "PixelNormalizationMixin", "UnreadableFilesCallback", "UnreadableImagesMixin"]
