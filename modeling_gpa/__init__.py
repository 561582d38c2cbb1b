"""Global Patch-wise Attention (GPA) for masked image modeling, as a Hugging Face Transformers model."""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
)

from .configuration_gpa import GPAConfig
from .modeling_gpa import (
    GPABackbone,
    GPAForImageClassification,
    GPAForPreTraining,
    GPAForPreTrainingOutput,
    GPAModel,
)

AutoConfig.register("gpa", GPAConfig, exist_ok=True)
AutoModelForPreTraining.register(GPAConfig, GPAForPreTraining, exist_ok=True)
# A GPA checkpoint as features (the encoder, unmasked) and as a ViT classifier: pipelines and Hugging Face's example
# scripts (run_image_classification.py) load it through these.
AutoModel.register(GPAConfig, GPAModel, exist_ok=True)
AutoModelForImageClassification.register(GPAConfig, GPAForImageClassification, exist_ok=True)
# The encoder's feature maps for dense tasks: UperNet's and DETR's `backbone_config` build it through AutoBackbone.
AutoBackbone.register(GPAConfig, GPABackbone, exist_ok=True)
# save_pretrained then copies configuration_gpa.py, modeling_gpa.py and the files they import relatively, and writes
# auto_map into config.json (every class above): Auto*.from_pretrained(dir, trust_remote_code=True) works without
# this package installed.
GPAConfig.register_for_auto_class()
GPAForPreTraining.register_for_auto_class("AutoModelForPreTraining")
GPAModel.register_for_auto_class("AutoModel")
GPAForImageClassification.register_for_auto_class("AutoModelForImageClassification")
GPABackbone.register_for_auto_class("AutoBackbone")

__version__ = "0.1.0"

__all__ = [
    "GPAConfig",
    "GPAForPreTraining",
    "GPAForPreTrainingOutput",
    "GPAModel",
    "GPAForImageClassification",
    "GPABackbone",
    "__version__",
]
