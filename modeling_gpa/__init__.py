"""Global Patch-wise Attention (GPA) for masked image modeling, as a Hugging Face Transformers model.

The modules at this level are the model and the method: ``configuration_gpa``, ``modeling_gpa``, ``mask_strategies``
(every mask strategy in one table) and its pure tensor functions: ``gpa`` and ``cls_attention`` (the scores),
``masking`` (Eq. 6 and its counts), ``block_masking`` (BEiT), ``hpm`` (HPM's objective), ``teacher``, and what they
import relatively (``checkpoint_files``, ``finite_weights``). They stay flat
because ``save_pretrained`` copies them beside the weights for ``trust_remote_code``: transformers copies a model's
file and the files it imports relatively into one flat folder, so a relative import into a subpackage would not
resolve there. ``presets``, ``head_selection`` (choosing the teacher's head) and ``command_line`` (what every script
shares) are used by training and evaluation alike. The rooms around them: ``data`` (images to uint8 batches, and the
splits), ``training`` (the Trainer and what the scripts share), ``simmim`` (SimMIM students with GPA masks),
``evaluation`` (k-NN, linear probe, fine-tuning, mask recall) and ``tools`` (FLOPs, memory, timm conversion,
figures).
"""

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
