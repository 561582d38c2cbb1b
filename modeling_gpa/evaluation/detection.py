"""Detection as far as Transformers goes: Conditional DETR over [`GPABackbone`], trained on boxes, scored by COCO-style
box mAP (the offline ``box_map`` module). The paper's protocol, Mask R-CNN on ViTDet, runs in detectron2 instead
(docs/dense_transfer.md)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import nn

from ..configuration_gpa import GPAConfig


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool object masks -> (N, 4) float boxes x0, y0, x1, y1 in pixels (edges, so x1 - x0 is the width)."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    height, width = masks.shape[-2:]
    top, bottom = rows.float().argmax(1), height - rows.flip(1).float().argmax(1)
    left, right = cols.float().argmax(1), width - cols.flip(1).float().argmax(1)
    return torch.stack([left, top, right, bottom], dim=1).float()


def detr_targets(boxes: torch.Tensor, classes: torch.Tensor, size: int) -> list[dict[str, torch.Tensor]]:
    """(N, 4) pixel boxes x0 y0 x1 y1 and (N,) classes, one object per image -> DETR's labels: per image
    ``class_labels`` (1,) and ``boxes`` (1, 4) as centre x, centre y, width, height over the image side ``size``."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    extent = boxes[:, 2:] - boxes[:, :2]
    normalized = torch.cat([centre, extent], dim=1) / size
    return [
        {"class_labels": label.view(1), "boxes": box.view(1, 4)} for label, box in zip(classes, normalized, strict=True)
    ]


def conditional_detr(
    model_name_or_path: str | None,
    id2label: dict[int, str],
    config: GPAConfig | None = None,
    d_model: int = 64,
    num_queries: int = 8,
):
    """``ConditionalDetrForObjectDetection`` over the last block of a GPA / ViTMAE / ViT checkpoint's encoder (a random
    one from ``config`` when ``model_name_or_path`` is None), with a small transformer (one encoder and one decoder
    layer of width ``d_model``)."""
    from transformers import ConditionalDetrConfig, ConditionalDetrForObjectDetection

    from ..modeling_gpa import GPABackbone

    pretrained = None
    if model_name_or_path is not None:
        pretrained = GPABackbone.from_pretrained(model_name_or_path)
        config = pretrained.config
    backbone_config = GPAConfig.from_dict(
        {**config.to_dict(), "out_indices": [config.num_hidden_layers], "out_features": None, "add_fpn": False}
    )
    detector_config = ConditionalDetrConfig(
        backbone_config=backbone_config,
        d_model=d_model,
        encoder_layers=1,
        decoder_layers=1,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_queries=num_queries,
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
    )
    model = ConditionalDetrForObjectDetection(detector_config)
    if pretrained is not None:
        backbone = model.model.backbone.model
        weights = {key: value for key, value in pretrained.state_dict().items() if key.startswith("vit.")}
        backbone.load_state_dict(weights, strict=False)
    return model


@torch.no_grad()
def detections(model: nn.Module, pixel_values: torch.Tensor, top_k: int = 8) -> list[dict[str, torch.Tensor]]:
    """(B, C, S, S) images -> per image the ``top_k`` (query, class) pairs by sigmoid score (Conditional DETR's focal
    scores): ``boxes`` (top_k, 4) x0 y0 x1 y1 in pixels, ``scores`` and ``labels`` (top_k,)."""
    outputs = model(pixel_values=pixel_values)
    probabilities = outputs.logits.sigmoid()
    batch, queries, classes = probabilities.shape
    scores, index = probabilities.flatten(1).topk(min(top_k, queries * classes), dim=1)
    boxes = outputs.pred_boxes.gather(1, (index // classes).unsqueeze(-1).expand(-1, -1, 4))
    centre, extent = boxes[..., :2], boxes[..., 2:]
    corners = torch.cat([centre - extent / 2, centre + extent / 2], dim=-1) * pixel_values.shape[-1]
    return [{"boxes": b, "scores": s, "labels": i % classes} for b, s, i in zip(corners, scores, index, strict=True)]


def train_detector(
    model: nn.Module,
    images: torch.Tensor,
    targets: list[dict[str, torch.Tensor]],
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
) -> list[float]:
    """AdamW (weight decay 1e-4, DETR's) for ``steps`` batches drawn without replacement from (N, C, S, S)
    ``images`` and their DETR ``targets``; returns the loss of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for index in itertools.islice(shuffled_batches(len(images), batch_size, generator), steps):
        loss = model(pixel_values=images[index], labels=[targets[i] for i in index]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        losses.append(loss.item())
    return losses


def shuffled_batches(size: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless (batch_size,) index batches: a new permutation of ``size`` items each epoch, the last partial batch
    dropped."""
    while True:
        order = torch.randperm(size, generator=generator)
        yield from order[: size // batch_size * batch_size].view(-1, batch_size)
