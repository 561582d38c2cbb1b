"""Where images come from and how they reach the model.

``sources`` loads a split (Fashion-MNIST, cluttered Fashion-MNIST, an image folder, the Hub) and builds the image
processor; ``pipeline`` turns images into uint8 batches (decode, crop, collate) and normalises them on the device
(`PixelNormalizer`); ``cluttered`` generates the synthetic cluttered set; ``ground_truth`` reads object masks
(a dataset, a masks folder, boxes) and draws the annotated images few-shot selection takes
(`annotated_model_inputs`); ``image_inputs`` prepares in-memory images for head selection and visualisation;
``fashion_mnist`` and ``arrays`` read the raw data; ``splits`` gives the pretraining scripts their train and validation
splits and crops.

Every public name of these modules is importable from here (``from modeling_gpa.data import load_image_datasets``).
They load on first use: ``sources`` imports `datasets`, which the GPU benchmark machines lack, and the modules that
need only torch and numpy must import there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# For type checkers and editors (go-to-definition), never run: the names __getattr__ finds, each from the first module
# searched that defines it; `X as X` marks them as this package's exports.
if TYPE_CHECKING:
    from .arrays import (
        arrays_to_dataset as arrays_to_dataset,
    )
    from .arrays import (
        encode_gray_images as encode_gray_images,
    )
    from .cluttered import (
        GENERATOR_VERSION as GENERATOR_VERSION,
    )
    from .cluttered import (
        TEXTURE_NAMES as TEXTURE_NAMES,
    )
    from .cluttered import (
        load_cluttered_fashion_mnist as load_cluttered_fashion_mnist,
    )
    from .cluttered import (
        make_cluttered as make_cluttered,
    )
    from .cluttered import (
        object_share as object_share,
    )
    from .cluttered import (
        textures as textures,
    )
    from .fashion_mnist import (
        FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES,
    )
    from .fashion_mnist import (
        FASHION_MNIST_DIR as FASHION_MNIST_DIR,
    )
    from .fashion_mnist import (
        FASHION_MNIST_FILES as FASHION_MNIST_FILES,
    )
    from .fashion_mnist import (
        FASHION_MNIST_MEAN as FASHION_MNIST_MEAN,
    )
    from .fashion_mnist import (
        FASHION_MNIST_STD as FASHION_MNIST_STD,
    )
    from .fashion_mnist import (
        fashion_mnist_arrays as fashion_mnist_arrays,
    )
    from .fashion_mnist import (
        fashion_mnist_paths as fashion_mnist_paths,
    )
    from .fashion_mnist import (
        garment_arrays as garment_arrays,
    )
    from .fashion_mnist import (
        read_idx as read_idx,
    )
    from .ground_truth import (
        IMAGE_EXTENSIONS as IMAGE_EXTENSIONS,
    )
    from .ground_truth import (
        MAX_NONZERO_COVERAGE as MAX_NONZERO_COVERAGE,
    )
    from .ground_truth import (
        AnnotatedImages as AnnotatedImages,
    )
    from .ground_truth import (
        annotated_model_inputs as annotated_model_inputs,
    )
    from .ground_truth import (
        masks_from_boxes as masks_from_boxes,
    )
    from .ground_truth import (
        masks_from_dataset as masks_from_dataset,
    )
    from .ground_truth import (
        masks_from_folder as masks_from_folder,
    )
    from .ground_truth import (
        object_patches as object_patches,
    )
    from .image_inputs import (
        ImageSettings as ImageSettings,
    )
    from .image_inputs import (
        default_mean_std as default_mean_std,
    )
    from .image_inputs import (
        resize_masks as resize_masks,
    )
    from .pipeline import (
        EXIF_ORIENTATION as EXIF_ORIENTATION,
    )
    from .pipeline import (
        IMAGENET_MEAN as IMAGENET_MEAN,
    )
    from .pipeline import (
        IMAGENET_STD as IMAGENET_STD,
    )
    from .pipeline import (
        JPEG_MAGIC as JPEG_MAGIC,
    )
    from .pipeline import (
        MAX_UNREADABLE_IN_A_ROW as MAX_UNREADABLE_IN_A_ROW,
    )
    from .pipeline import (
        PIL_MODES as PIL_MODES,
    )
    from .pipeline import (
        UNREADABLE_KEY as UNREADABLE_KEY,
    )
    from .pipeline import (
        EvalCrop as EvalCrop,
    )
    from .pipeline import (
        ImageDataset as ImageDataset,
    )
    from .pipeline import (
        JpegHeader as JpegHeader,
    )
    from .pipeline import (
        JpegImageDataset as JpegImageDataset,
    )
    from .pipeline import (
        PixelNormalizer as PixelNormalizer,
    )
    from .pipeline import (
        TrainCrop as TrainCrop,
    )
    from .pipeline import (
        UnreadableImageError as UnreadableImageError,
    )
    from .pipeline import (
        collate_pixel_values as collate_pixel_values,
    )
    from .pipeline import (
        collate_pixel_values_and_labels as collate_pixel_values_and_labels,
    )
    from .pipeline import (
        decode_image as decode_image,
    )
    from .pipeline import (
        exif_orientation as exif_orientation,
    )
    from .pipeline import (
        exif_transpose_tensor as exif_transpose_tensor,
    )
    from .pipeline import (
        exif_transposed as exif_transposed,
    )
    from .pipeline import (
        image_bytes as image_bytes,
    )
    from .pipeline import (
        image_name as image_name,
    )
    from .pipeline import (
        jpeg_header as jpeg_header,
    )
    from .pipeline import (
        random_resized_crop_box as random_resized_crop_box,
    )
    from .pipeline import (
        to_num_channels as to_num_channels,
    )
    from .pipeline import (
        to_uint8_tensor as to_uint8_tensor,
    )
    from .pipeline import (
        warn_large_image as warn_large_image,
    )
    from .sources import (
        CLUTTERED_FASHION_MNIST_NAME as CLUTTERED_FASHION_MNIST_NAME,
    )
    from .sources import (
        FASHION_MNIST_NAMES as FASHION_MNIST_NAMES,
    )
    from .sources import (
        LISTINGS as LISTINGS,
    )
    from .sources import (
        SHARD_SUFFIXES as SHARD_SUFFIXES,
    )
    from .sources import (
        build_image_processor as build_image_processor,
    )
    from .sources import (
        holds_shards as holds_shards,
    )
    from .sources import (
        hub_error_message as hub_error_message,
    )
    from .sources import (
        image_column as image_column,
    )
    from .sources import (
        image_folder_data_files as image_folder_data_files,
    )
    from .sources import (
        listing_record_path as listing_record_path,
    )
    from .sources import (
        load_fashion_mnist as load_fashion_mnist,
    )
    from .sources import (
        load_from_hub_or_folder as load_from_hub_or_folder,
    )
    from .sources import (
        load_image_datasets as load_image_datasets,
    )
    from .sources import (
        load_image_datasets_of as load_image_datasets_of,
    )
    from .sources import (
        load_image_folder as load_image_folder,
    )
    from .sources import (
        transforms_from_processor as transforms_from_processor,
    )
    from .sources import (
        with_pixel_values as with_pixel_values,
    )
    from .splits import (
        IMAGE_DECODING as IMAGE_DECODING,
    )
    from .splits import (
        image_geometry as image_geometry,
    )
    from .splits import (
        load_splits as load_splits,
    )
    from .splits import (
        load_stream_splits as load_stream_splits,
    )
    from .splits import (
        prepare_split as prepare_split,
    )
    from .splits import (
        set_max_steps_from_examples as set_max_steps_from_examples,
    )
    from .splits import (
        with_crops as with_crops,
    )
    from .streaming import (
        DEFAULT_SHUFFLE_BUFFER_SIZE as DEFAULT_SHUFFLE_BUFFER_SIZE,
    )
    from .streaming import (
        IN_MEMORY_SHARDS as IN_MEMORY_SHARDS,
    )
    from .streaming import (
        ImageStreams as ImageStreams,
    )
    from .streaming import (
        NodeSplit as NodeSplit,
    )
    from .streaming import (
        StreamingImageDataset as StreamingImageDataset,
    )
    from .streaming import (
        load_image_streams as load_image_streams,
    )
    from .streaming import (
        split_stream as split_stream,
    )

# Searched in this order; the modules that need only torch and numpy come first.
_SUBMODULES = (
    "pipeline",
    "fashion_mnist",
    "image_inputs",
    "ground_truth",
    "arrays",
    "sources",
    "streaming",
    "cluttered",
    "splits",
)


def __getattr__(name: str):
    if not name.startswith("_"):
        for submodule in _SUBMODULES:
            module = importlib.import_module(f"{__name__}.{submodule}")
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
