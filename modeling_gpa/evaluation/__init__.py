"""Downstream evaluation of a pretrained encoder, and the object recall of GPA's masks.

``features`` loads any GPA, ViTMAE or ViT checkpoint as a ``ViTModel`` and pools its features; ``knn`` and
``linear_probe`` classify frozen features; ``finetune`` and ``recipes`` hold what end-to-end fine-tuning adds
(layer-wise lr decay, LARS, Mixup/CutMix, label smoothing); ``metric_loading`` loads the offline ``evaluate`` modules
in ``metrics/`` (whose formulas are ``metric_functions``); ``mask_recall`` measures how much of the object GPA's masks
cover; ``cli`` is what the evaluation scripts share.
"""

from .cli import (
    add_dataset_arguments,
    add_frozen_encoder_arguments,
    class_names,
    find_label_column,
    frozen_encoder_features,
    labelled_features,
    load_labelled_splits,
    report_results,
    write_results,
)
from .features import (
    POOLINGS,
    check_features,
    check_labels,
    check_pooling,
    encode,
    extract_features,
    load_encoder,
    load_vit,
    pool,
)
from .finetune import param_groups_layer_decay, swin_layer_id, vit_layer_id
from .knn import knn_accuracy, knn_scores
from .linear_probe import (
    MAE_LARS_LR,
    OPTIMIZERS,
    LinearProbe,
    linear_probe_accuracy,
    probe_logits,
    train_linear_probe,
)
from .metric_loading import METRICS_DIR, ArrayMetric, load_metric
from .recipes import LARS, MixupCutmixCollator, cosine_lr, soft_target_cross_entropy

__all__ = [
    "ArrayMetric",
    "LARS",
    "LinearProbe",
    "MAE_LARS_LR",
    "METRICS_DIR",
    "MixupCutmixCollator",
    "OPTIMIZERS",
    "POOLINGS",
    "add_dataset_arguments",
    "add_frozen_encoder_arguments",
    "check_features",
    "check_labels",
    "check_pooling",
    "class_names",
    "cosine_lr",
    "encode",
    "extract_features",
    "find_label_column",
    "frozen_encoder_features",
    "knn_accuracy",
    "knn_scores",
    "labelled_features",
    "linear_probe_accuracy",
    "load_encoder",
    "load_labelled_splits",
    "load_metric",
    "load_vit",
    "param_groups_layer_decay",
    "pool",
    "probe_logits",
    "report_results",
    "soft_target_cross_entropy",
    "train_linear_probe",
    "swin_layer_id",
    "vit_layer_id",
    "write_results",
]
