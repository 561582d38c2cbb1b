"""Features of a frozen encoder: a GPA, ViTMAE or ViT checkpoint loaded as a ``ViTModel``, a Swin one (such as a
SimMIM ``SwinForMaskedImageModeling``) as a ``SwinModel``, and pooled."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from transformers import AutoConfig, SwinModel, ViTModel
from transformers.utils import logging as transformers_logging

from ..command_line import check_checkpoint
from ..data.pipeline import UNREADABLE_KEY
from ..finite_weights import nonfinite_tensors

POOLINGS = ("cls", "mean")
SWIN_HAS_NO_CLS = "A Swin encoder has no CLS token: pass --pooling mean."

logger = logging.getLogger(__name__)


def load_vit(model_class: type, name_or_path: str, encoder_prefix: str = "", trust_remote_code: bool = False, **kwargs):
    """``model_class.from_pretrained`` of a GPA, ViTMAE, ViT or Swin checkpoint, refusing one without encoder weights.

    ``encoder_prefix`` is where the encoder sits in ``model_class`` (``""`` for ``ViTModel`` / ``SwinModel``,
    ``"vit."`` for ``ViTForImageClassification``, ``"swin."`` for ``SwinForImageClassification``). Raises a one-line
    ``ValueError`` when loading fails or when any encoder weight is missing (it would silently stay random), and
    before loading when its weight files cannot load or its config needs code of its own without
    ``trust_remote_code`` (`modeling_gpa.command_line.check_checkpoint`).
    """
    check_checkpoint(name_or_path, trust_remote_code)
    # Transformers' load report tabulates every decoder weight a pretraining checkpoint carries; the checks below say
    # what matters in one line instead.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(
            name_or_path, output_loading_info=True, trust_remote_code=trust_remote_code, **kwargs
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Cannot load an encoder from {name_or_path!r} ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "pass --model_name_or_path a directory saved by run_pretrain.py, run_mim.py, ViTMAEForPreTraining or "
            "ViTModel."
        ) from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    # "encoder." holds a Swin's stages; a ViT's blocks are "layers.".
    encoder_keys = (f"{encoder_prefix}embeddings.", f"{encoder_prefix}layers.", f"{encoder_prefix}encoder.")
    missing = sorted(info["missing_keys"])
    missing_encoder = [key for key in missing if key.startswith(encoder_keys)]
    if missing_encoder:
        raise ValueError(
            f"{name_or_path!r} has no encoder weights ({len(missing_encoder)} missing, e.g. "
            f"{missing_encoder[0]!r}); pass --model_name_or_path a GPA, ViTMAE, ViT or Swin checkpoint."
        )
    if bad := nonfinite_tensors(model):
        raise ValueError(
            f"{name_or_path!r} has non-finite weights (NaN or inf) in {len(bad)} tensors (first: {bad[0]!r}): it "
            "diverged in training and any score of it would be meaningless; evaluate an earlier checkpoint."
        )
    if missing:
        logger.warning("Newly initialised (train them before use): %s.", ", ".join(missing))
    logger.info(
        "Loaded %s from %s; %d checkpoint weights it has no use for were left out.",
        type(model).__name__,
        name_or_path,
        len(info["unexpected_keys"]),
    )
    return model


def load_encoder(name_or_path: str, trust_remote_code: bool = False) -> ViTModel | SwinModel:
    """The encoder of a checkpoint directory (or Hub id), in eval mode: a ``SwinModel`` for a Swin checkpoint, else
    the ``ViTModel`` of a GPA, ViTMAE or ViT one."""
    model_class = SwinModel if swin_checkpoint(name_or_path, trust_remote_code) else ViTModel
    return load_vit(model_class, name_or_path, trust_remote_code=trust_remote_code, add_pooling_layer=False).eval()


def swin_checkpoint(name_or_path: str, trust_remote_code: bool = False) -> bool:
    """Whether the checkpoint's config is a Swin's; ``False`` without one (``load_vit`` then says what is wrong)."""
    try:
        return is_swin(AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code))
    except (OSError, ValueError, KeyError):
        return False


def is_swin(config) -> bool:
    """Whether ``config`` is a Swin's: its last hidden state has no CLS token, only the final stage's patches."""
    return config.model_type == "swin"


def check_pooling(encoder: ViTModel | SwinModel, pooling: str) -> None:
    """Raises a one-line ``ValueError`` for a pooling ``encoder`` cannot give: "cls" of a Swin, which has no CLS."""
    if pooling == "cls" and is_swin(encoder.config):
        raise ValueError(SWIN_HAS_NO_CLS)


def pool(last_hidden_state: torch.Tensor, pooling: str, cls_token: bool = True) -> torch.Tensor:
    """(B, 1+n, D) encoder output (B, n, D without ``cls_token``) -> (B, D): the CLS token or the patches' mean."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is invalid; allowed values: {', '.join(map(repr, POOLINGS))}.")
    if not cls_token:
        if pooling == "cls":
            raise ValueError(SWIN_HAS_NO_CLS)
        return last_hidden_state.mean(dim=1)
    if pooling == "cls":
        return last_hidden_state[:, 0]
    return last_hidden_state[:, 1:].mean(dim=1)


@torch.no_grad()
def encode(
    encoder: ViTModel | SwinModel,
    pixel_values: torch.Tensor,
    pooling: str = "cls",
    batch_size: int = 256,
    device: str = "cpu",
) -> torch.Tensor:
    """(N, C, H, W) images -> (N, D) float32 CPU features of the frozen ``encoder``."""
    encoder.eval().to(device)
    cls_token = not is_swin(encoder.config)
    chunks = [
        pool(encoder(chunk.to(device)).last_hidden_state, pooling, cls_token).float().cpu()
        for chunk in pixel_values.split(batch_size)
    ]
    return torch.cat(chunks)


@torch.no_grad()
def extract_features(
    encoder: ViTModel | SwinModel,
    batches: Iterable[dict],
    pooling: str = "cls",
    device: str = "cpu",
    normalizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
    unreadable: set[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches of ``{"pixel_values": (B, C, H, W), "labels": (B,)}`` -> (N, D) float32 features, (N,) int64 labels.

    uint8 pixels (the input pipeline's) are normalised on ``device`` by ``normalizer`` (a `PixelNormalizer`); float
    pixels are taken as already normalised. The names of replaced unreadable images (``"unreadable_images"``) are
    added to ``unreadable`` when it is given.
    """
    encoder.eval().to(device)
    cls_token = not is_swin(encoder.config)
    features, labels = [], []
    for batch in batches:
        if unreadable is not None:
            unreadable.update(batch.get(UNREADABLE_KEY, ()))
        pixel_values = batch["pixel_values"].to(device, non_blocking=True)
        if pixel_values.dtype == torch.uint8:
            if normalizer is None:
                raise ValueError("uint8 pixel_values need a normalizer: pass the checkpoint's PixelNormalizer")
            pixel_values = normalizer(pixel_values)
        hidden = encoder(pixel_values).last_hidden_state
        features.append(pool(hidden, pooling, cls_token).float().cpu())
        labels.append(torch.as_tensor(batch["labels"]).long())
    if not features:
        raise ValueError("No images to extract features from: the batches are empty.")
    return torch.cat(features), torch.cat(labels)


def check_features(train_features: torch.Tensor, query_features: torch.Tensor) -> None:
    """Raises ``ValueError`` unless both are (N, D) with the same D."""
    if train_features.dim() != 2 or query_features.dim() != 2 or train_features.shape[1] != query_features.shape[1]:
        raise ValueError(
            f"Feature dimension mismatch: train features {tuple(train_features.shape)} vs query features "
            f"{tuple(query_features.shape)}; extract both with the same encoder and pooling."
        )


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Raises ``ValueError`` unless every label is a class id in ``[0, num_classes)``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"Labels must be class ids in [0, {num_classes}); got values in [{int(labels.min())}, "
            f"{int(labels.max())}]. Pass --label_column_name a column of integer class ids."
        )
