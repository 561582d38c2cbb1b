"""Launched on each of two processes: what each process draws, in the real pretraining and fine-tuning scripts.

``rank_draws_launch.py OUT PRETRAIN_ARGS... -- FINETUNE_ARGS...`` writes ``OUT/draws-<rank>.pt``:

- ``pixels``, ``masks``: the crops and masks of every pretraining forward (run_pretrain.build_trainer, 2 steps,
  a checkpoint at step 1), and ``weights``, the encoder's weights after them;
- ``resumed_pixels``, ``resumed_masks``: those of step 2 again, resumed from ``checkpoint-1`` in a new --output_dir;
- ``mixup``: timm's (lambda, cutmix) per fine-tuning batch, and ``crops``: timm's crop boxes (run_finetune.main).
"""

import os
import sys
from pathlib import Path

import torch
from timm.data.mixup import Mixup
from timm.data.transforms import RandomResizedCropAndInterpolation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "run_scripts"))
import run_finetune  # noqa: E402
import run_pretrain  # noqa: E402

output = Path(sys.argv[1])
separator = sys.argv.index("--")
pretrain_argv, finetune_argv = sys.argv[2:separator], sys.argv[separator + 1 :]
rank = int(os.environ["RANK"])


def recorded_pretraining(argv: list[str]) -> tuple[list, list, torch.nn.Module]:
    """Trains run_pretrain.py's trainer for ``argv``; returns its forwards' (pixels, masks) and its model."""
    trainer, checkpoint = run_pretrain.build_trainer(*run_pretrain.parse_arguments(argv))
    pixels, masks = [], []

    def record(module, args, kwargs, result):
        pixels.append(kwargs["pixel_values"].detach().clone())
        masks.append(result.mask.detach().clone())

    trainer.model.register_forward_hook(record, with_kwargs=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    return pixels, masks, trainer.model


pixels, masks, model = recorded_pretraining(pretrain_argv)
first = Path(pretrain_argv[pretrain_argv.index("--output_dir") + 1])
resumed_argv = [*pretrain_argv, "--output_dir", str(first.with_name("resumed"))]
resumed_argv += ["--resume_from_checkpoint", str(first / "checkpoint-1")]
resumed_pixels, resumed_masks, _ = recorded_pretraining(resumed_argv)

# Spies on timm's draws (they call the originals): the Mixup lambda and mode of each batch, the crop of each image.
mixup, crops = [], []
params_per_batch, crop_params = Mixup._params_per_batch, RandomResizedCropAndInterpolation.get_params


def recorded_params_per_batch(self):
    drawn = params_per_batch(self)
    mixup.append((float(drawn[0]), bool(drawn[1])))
    return drawn


def recorded_crop_params(*args, **kwargs):
    drawn = crop_params(*args, **kwargs)
    crops.append(tuple(int(value) for value in drawn))
    return drawn


Mixup._params_per_batch = recorded_params_per_batch
RandomResizedCropAndInterpolation.get_params = staticmethod(recorded_crop_params)
run_finetune.main(finetune_argv + ["--model_name_or_path", str(first / "checkpoint-2")])

torch.save(
    {
        "pixels": pixels,
        "masks": masks,
        "weights": {name: value.detach().clone() for name, value in model.vit.state_dict().items()},
        "resumed_pixels": resumed_pixels,
        "resumed_masks": resumed_masks,
        "mixup": mixup,
        "crops": crops,
    },
    output / f"draws-{rank}.pt",
)
