"""Downstream evaluation of a pretrained encoder, and the object recall of GPA's masks.

``features`` loads any GPA, ViTMAE or ViT checkpoint as a ``ViTModel`` and pools its features; ``knn`` and
``linear_probe`` classify frozen features (the probe by MAE's protocol, with timm's LARS); ``finetune`` builds the
timm classifier end-to-end fine-tuning trains and its layer-wise lr decay, ``recipes`` holds MAE's, the GPA
release's and Trainer's plain fine-tuning settings; ``metric_loading`` loads the offline ``evaluate`` modules
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
from .finetune import (
    TIMM_POOLINGS,
    param_groups_layer_decay,
    swin_layer_id,
    timm_classifier,
    timm_param_groups,
    vit_layer_id,
)
from .knn import knn_accuracy, knn_scores
from .linear_probe import (
    AUGMENTATIONS,
    MAE_LINEAR_PROBE,
    OPTIMIZERS,
    LinearProbe,
    augmented_feature_batches,
    fit_linear_probe,
    linear_probe_accuracy,
    probe_logits,
    probe_metrics,
    probe_optimizer,
    top1_top5,
    train_augmented_linear_probe,
    train_linear_probe,
)
from .metric_loading import METRICS_DIR, ArrayMetric, load_metric
from .recipes import (
    MODEL_SIZES,
    RECIPES,
    FinetuneRecipe,
    checkpoint_model_size,
    cosine_lr,
    finetune_recipe,
    resolve_model_size,
)

__all__ = [
    "AUGMENTATIONS",
    "ArrayMetric",
    "FinetuneRecipe",
    "LinearProbe",
    "MAE_LINEAR_PROBE",
    "METRICS_DIR",
    "MODEL_SIZES",
    "OPTIMIZERS",
    "POOLINGS",
    "RECIPES",
    "TIMM_POOLINGS",
    "add_dataset_arguments",
    "add_frozen_encoder_arguments",
    "augmented_feature_batches",
    "check_features",
    "check_labels",
    "check_pooling",
    "class_names",
    "cosine_lr",
    "encode",
    "extract_features",
    "find_label_column",
    "finetune_recipe",
    "checkpoint_model_size",
    "resolve_model_size",
    "fit_linear_probe",
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
    "probe_metrics",
    "probe_optimizer",
    "report_results",
    "swin_layer_id",
    "timm_classifier",
    "timm_param_groups",
    "top1_top5",
    "train_augmented_linear_probe",
    "train_linear_probe",
    "vit_layer_id",
    "write_results",
]
