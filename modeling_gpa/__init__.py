"""Global Patch-wise Attention (GPA) for masked image modeling, as a Hugging Face Transformers model."""

from transformers import AutoConfig, AutoModelForPreTraining

from .configuration_gpa import GPAConfig
from .modeling_gpa import GPAForPreTraining, GPAForPreTrainingOutput

AutoConfig.register("gpa", GPAConfig, exist_ok=True)
AutoModelForPreTraining.register(GPAConfig, GPAForPreTraining, exist_ok=True)

__version__ = "0.1.0"

__all__ = ["GPAConfig", "GPAForPreTraining", "GPAForPreTrainingOutput", "__version__"]
