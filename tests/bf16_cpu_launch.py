"""run_scripts/run_pretrain.py as ``accelerate launch`` starts it, for the DeepSpeed bf16 test on CPU processes.

Transformers accepts ``--bf16`` only with a bf16 GPU or with ``--use_cpu``, and ``--use_cpu`` keeps accelerate from
starting DeepSpeed. DeepSpeed's CPU accelerator (``DS_ACCELERATOR=cpu``) runs a bf16 engine all the same, so this
launcher answers Transformers' hardware probe with yes and runs the script unchanged.
"""

import runpy
import sys
from pathlib import Path

import transformers.training_args

transformers.training_args.is_torch_bf16_gpu_available = lambda: True
script = Path(__file__).resolve().parents[1] / "run_scripts" / "run_pretrain.py"
sys.argv = [str(script), *sys.argv[1:]]
runpy.run_path(str(script), run_name="__main__")
