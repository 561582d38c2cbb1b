"""Global Patch-wise Attention (GPA) for masked image modeling, as a Hugging Face Transformers model."""

from transformers import AutoConfig, AutoModelForPreTraining

from .configuration_gpa import GPAConfig
from .modeling_gpa import GPAForPreTraining, GPAForPreTrainingOutput

AutoConfig.register("gpa", GPAConfig, exist_ok=True)
AutoModelForPreTraining.register(GPAConfig, GPAForPreTraining, exist_ok=True)
# save_pretrained then copies configuration_gpa.py, modeling_gpa.py and the files they import relatively, and writes
# auto_map into config.json: AutoModelForPreTraining.from_pretrained(dir, trust_remote_code=True) works without
# this package installed.
GPAConfig.register_for_auto_class()
GPAForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__version__ = "0.1.0"

__all__ = ["GPAConfig", "GPAForPreTraining", "GPAForPreTrainingOutput", "__version__"]
