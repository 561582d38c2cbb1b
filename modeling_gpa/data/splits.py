"""The train and validation splits a pretraining script trains on, and their crops: loaded (as Arrow datasets or
streams) and truncated by [`load_splits`], the image size and channels read off a few images by [`image_geometry`],
and both splits wrapped into uint8 datasets by [`with_crops`]. ``data_args`` is the scripts' ``ImageDataArguments``
(`modeling_gpa.training.arguments`)."""

from __future__ import annotations

import logging
import math

import datasets
import torch
from transformers import TrainingArguments

from .device_decoding import DeviceDecodingImageDataset, nvjpeg_decoder
from .folder_checks import check_image_folders
from .pipeline import ImageDataset, UnreadableImageError, decode_image
from .sources import load_image_datasets_of, transforms_from_processor, with_pixel_values
from .streaming import StreamingImageDataset, load_image_streams, split_stream
from .torchvision_decoding import TorchvisionImageDataset, torchvision_decoding_available

logger = logging.getLogger(__name__)


# Where training JPEGs are decoded: in the DataLoader workers, or on the training device (nvJPEG).
IMAGE_DECODING = ("cpu", "pil", "device")


def image_geometry(
    dataset: datasets.Dataset | datasets.IterableDataset, image_column: str, probe: int = 16
) -> tuple[int | None, int]:
    """(side, channels) of the readable images among the first ``probe``: side when all are equal squares, else None;
    1 if all are gray. A stream is read only that far."""
    if isinstance(dataset, datasets.IterableDataset):
        head = dataset.take(probe)
    else:
        head = dataset.select(range(min(probe, len(dataset))))
    feature = head.features[image_column] if head.features is not None else None
    if getattr(feature, "decode", False):
        head = head.cast_column(image_column, type(feature)(decode=False))
    values = [row[image_column] for row in head] if isinstance(head, datasets.IterableDataset) else head[image_column]
    images = []
    for index, value in enumerate(values):
        try:
            images.append(decode_image(value, index))
        except UnreadableImageError:
            continue  # reported when the loader reaches it
    sizes = {image.size for image in images}
    side = next(iter(sizes))[0] if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1 else None
    gray = bool(images) and all(
        image.mode in ("1", "L", "LA", "I", "F") or image.mode.startswith("I;16") for image in images
    )
    return side, 1 if gray else 3


def prepare_split(
    dataset: datasets.Dataset, name: str, limit: int | None, training_args: TrainingArguments
) -> datasets.Dataset:
    """Seeded truncation to ``limit`` images, as run_mae.py does. Images are only decoded when the loader reads them."""
    if limit is not None:
        dataset = dataset.shuffle(seed=training_args.seed).select(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"the {name} split has no images: check --train_dir / --dataset_name.")
    return dataset


def load_splits(
    model_args, data_args, training_args: TrainingArguments
) -> tuple[datasets.Dataset | None, datasets.Dataset | None, str]:
    """The train split (with --do_train) and the validation split (with --do_eval), truncated, and the image column.

    ``model_args`` gives ``cache_dir``; ``data_args`` the dataset flags (``dataset_name``, ``train_dir``, ...,
    ``max_train_samples``, ``max_eval_samples``). A split that is not asked for is ``None``.
    """
    if data_args.streaming:
        return load_stream_splits(model_args, data_args, training_args)
    # The main process of each machine lists an image folder and builds the dataset cache first; the others then
    # open what it built, without listing the folder again.
    listing = None
    if training_args.world_size > 1:
        listing = "write" if training_args.local_process_index == 0 else "reuse"
    if listing != "reuse":
        # It walks the folders: only the process that lists them checks them.
        check_image_folders(data_args)
    with training_args.main_process_first(desc="loading the dataset"):
        dataset, image_column = load_image_datasets_of(
            data_args, model_args.cache_dir, training_args.seed, model_args.token, listing
        )
    train = eval_ = None
    if training_args.do_train:
        train = prepare_split(dataset["train"], "train", data_args.max_train_samples, training_args)
    if training_args.do_eval:
        if "validation" not in dataset:
            raise ValueError(
                "--do_eval needs a validation split: pass --validation_dir, or --train_val_split above 0, or drop "
                "--do_eval"
            )
        eval_ = prepare_split(dataset["validation"], "validation", data_args.max_eval_samples, training_args)
    return train, eval_, image_column


def load_stream_splits(
    model_args, data_args, training_args: TrainingArguments
) -> tuple[datasets.IterableDataset | None, datasets.IterableDataset | None, str]:
    """[`load_splits`] with --streaming: this process's part of the train stream and the validation stream.

    Sets ``training_args.max_steps`` from --num_train_epochs and the number of training examples (metadata or
    --train_examples) when --max_steps is not given, so the mask schedule's progress stays exact, and records that
    number in ``data_args.train_examples``.
    """
    streams = load_image_streams(
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        train_dir=data_args.train_dir,
        validation_dir=data_args.validation_dir,
        cache_dir=model_args.cache_dir,
        token=model_args.token,
        image_column_name=data_args.image_column_name,
    )
    examples = data_args.train_examples or streams.train_examples
    if data_args.max_train_samples is not None:
        examples = min(examples, data_args.max_train_samples) if examples else data_args.max_train_samples
    train = eval_ = None
    if training_args.do_train:
        train = streams.train
        if data_args.max_train_samples is not None:
            train = train.take(data_args.max_train_samples)
        train, node_split = split_stream(train, training_args.process_index, training_args.world_size)
        log = logger.info if node_split.whole_shards else logger.warning
        log(node_split.describe())
        set_max_steps_from_examples(training_args, examples)
        # with_crops hands it to the StreamingImageDataset (an epoch-based mask schedule counts epochs in examples).
        data_args.train_examples = examples
    if training_args.do_eval:
        if streams.validation is None:
            raise ValueError(
                "--do_eval with --streaming needs a 'validation' (or 'test') split: pass --validation_dir, a dataset "
                "with one, or drop --do_eval"
            )
        eval_ = streams.validation
        if data_args.max_eval_samples is not None:
            eval_ = eval_.take(data_args.max_eval_samples)
    return train, eval_, streams.image_column


def set_max_steps_from_examples(training_args: TrainingArguments, examples: int | None) -> None:
    """--max_steps for --num_train_epochs over a stream of ``examples`` training examples (None: unknown)."""
    if training_args.max_steps > 0:
        if getattr(training_args, "mask_schedule", "step") == "epoch" and not examples:
            raise ValueError(
                "--mask_schedule epoch with --streaming needs the number of training examples: pass --train_examples"
            )
        return
    if not examples:
        raise ValueError(
            "a streamed dataset has no length and its metadata records no number of examples: pass --max_steps, or "
            "--train_examples N with --num_train_epochs"
        )
    total_batch = training_args.train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
    training_args.max_steps = math.ceil(training_args.num_train_epochs * examples / total_batch)
    logger.info(
        f"--num_train_epochs {training_args.num_train_epochs:g} over {examples:,} streamed examples in batches of "
        f"{total_batch}: --max_steps {training_args.max_steps}."
    )


def with_crops(
    train: datasets.Dataset | None,
    eval_: datasets.Dataset | None,
    processor,
    num_channels: int,
    image_column: str,
    data_args,
    device: torch.device,
    seed: int = 0,
    rank: int = 0,
) -> tuple[ImageDataset | StreamingImageDataset | None, ImageDataset | StreamingImageDataset | None]:
    """Both splits with uint8 ``pixel_values`` (C, H, W): the processor's random crop for train, its fixed one for eval.

    The trainer normalises each batch on ``device`` with the processor's mean/std. ``data_args`` gives
    ``strict_images`` and ``image_decoding``: with ``cpu`` the train split's JPEGs are decoded and cropped by
    torchvision (`modeling_gpa.data.torchvision_decoding.TorchvisionImageDataset`), with ``pil`` by PIL, and with
    ``device`` they stay undecoded until they reach ``device``
    (`modeling_gpa.data.device_decoding.DeviceDecodingImageDataset`), and a machine that cannot decode them there
    fails here, with a one-line `DeviceDecodingUnavailable`. With ``--streaming`` the
    splits are streams and become [`StreamingImageDataset`]s; the train one shuffles through a buffer seeded by
    ``seed`` and ``rank``.
    """
    strict = data_args.strict_images
    if data_args.image_decoding not in IMAGE_DECODING:
        raise ValueError(f"--image_decoding {data_args.image_decoding!r}: choose one of {', '.join(IMAGE_DECODING)}")
    if train is not None:
        crop = transforms_from_processor(processor, num_channels, train=True)
        if data_args.image_decoding == "device":
            nvjpeg_decoder(device)
            train = DeviceDecodingImageDataset(train, crop, image_column, strict=strict)
        elif data_args.image_decoding == "cpu" and torchvision_decoding_available():
            train = TorchvisionImageDataset(train, crop, image_column, strict=strict)
        else:
            if data_args.image_decoding == "cpu":
                logger.info("torchvision does not import here: training images are decoded by PIL.")
            train = with_pixel_values(train, crop, image_column, strict=strict)
        if data_args.streaming:
            train = StreamingImageDataset(
                train,
                data_args.shuffle_buffer_size,
                seed=seed,
                rank=rank,
                num_examples=data_args.train_examples,
            )
    if eval_ is not None:
        crop = transforms_from_processor(processor, num_channels, train=False)
        eval_ = with_pixel_values(eval_, crop, image_column, strict=strict)
        if data_args.streaming:
            eval_ = StreamingImageDataset(eval_)
    return train, eval_
