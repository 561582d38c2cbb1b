"""What a checkpoint's GPA sees: the paper's Figure 2 triple and MAE's reconstruction, one PNG pair per image.

For each image: ``gpa_<name>.png`` (the image, its GPA heat map, the mask the soft-to-hard schedule applies at the
end of training: hard / soft / random patches in distinct colours) and, for GPA and ViTMAE checkpoints,
``reconstruction_<name>.png`` (original, masked input, reconstruction, reconstruction with the visible patches).
Images are resized to the model's size and converted to its channels, normalised with the checkpoint's image
processor settings when it has them.

    python run_scripts/visualize_gpa.py --model_name_or_path outputs/gpa-fmnist --output_dir outputs/figures
"""

from __future__ import annotations

import argparse
import os
import re

import numpy as np
import torch
from PIL import Image

from modeling_gpa.command_line import TRUST_REMOTE_CODE_HELP, exit_on_bad_input
from modeling_gpa.data.image_inputs import SKIMAGE_PHOTOS, ImageSettings, example_images
from modeling_gpa.head_selection import load_scoring_model, teacher_encoder_of
from modeling_gpa.masking import KEPT, MaskSchedule, mask_groups, noise_from_mask, num_masked_patches
from modeling_gpa.tools.visualization import (
    configured_layer_head,
    gpa_figure,
    gpa_scores,
    grey_out,
    mae_reconstruction,
    reconstruction_figure,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="GPA, ViTMAE or ViT checkpoint directory.")
    parser.add_argument(
        "--images", nargs="+", default=None, help="Image files (default: the photos and samples below)."
    )
    parser.add_argument(
        "--skimage_images",
        nargs="*",
        default=list(SKIMAGE_PHOTOS),
        help=f"scikit-image photos used when --images is not given (default: {' '.join(SKIMAGE_PHOTOS)}).",
    )
    parser.add_argument(
        "--num_fashion_mnist", type=int, default=2, help="Fashion-MNIST test images used when --images is not given."
    )
    parser.add_argument("--gpa_layer", type=int, default=None, help="Teacher block (default: the checkpoint's).")
    parser.add_argument("--gpa_head", default=None, help="Teacher head, or 'all' (default: the checkpoint's).")
    parser.add_argument("--mask_ratio", type=float, default=None, help="Default: the checkpoint's (0.75 for a ViT).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the soft and random mask patches.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--trust_remote_code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    return parser.parse_args(argv)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def load_images(paths: list[str]) -> list[tuple[str, Image.Image]]:
    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--images: {path!r} does not exist.")
        images.append((os.path.splitext(os.path.basename(path))[0], Image.open(path)))
    return images


def layer_and_head(model, args: argparse.Namespace) -> tuple[int, int | None]:
    """Resolved block and head: the arguments where given, else the checkpoint's choice."""
    layer, head = configured_layer_head(model)
    encoder = teacher_encoder_of(model)
    num_layers, num_heads = len(encoder.layers), encoder.config.num_attention_heads
    if args.gpa_layer is not None:
        if not -num_layers <= args.gpa_layer < num_layers:
            raise ValueError(f"--gpa_layer {args.gpa_layer} is out of range: the teacher has {num_layers} blocks.")
        layer = args.gpa_layer % num_layers
    if args.gpa_head is not None:
        if args.gpa_head == "all":
            return layer, None
        if not re.fullmatch(r"-?\d+", args.gpa_head) or not -num_heads <= int(args.gpa_head) < num_heads:
            raise ValueError(f"--gpa_head {args.gpa_head!r} is invalid: give 'all' or a head in [0, {num_heads - 1}].")
        head = int(args.gpa_head) % num_heads
    return layer, head


def run(args: argparse.Namespace) -> list[str]:
    model = load_scoring_model(args.model_name_or_path, args.trust_remote_code)
    config = model.config
    settings = ImageSettings.from_pretrained(args.model_name_or_path, config)
    named = load_images(args.images) if args.images else example_images(args.skimage_images, args.num_fashion_mnist)
    if not named:
        raise ValueError("no images to draw: pass --images or keep the default photos / Fashion-MNIST samples.")
    layer, head = layer_and_head(model, args)
    mask_ratio = args.mask_ratio if args.mask_ratio is not None else getattr(config, "mask_ratio", 0.75)
    schedule = MaskSchedule.from_config(config) if hasattr(config, "hard_ratio_end") else MaskSchedule()

    pixel_values = settings.to_pixel_values([image for _, image in named])
    gpa = gpa_scores(model, pixel_values, layer=layer, head=head)
    generator = torch.Generator().manual_seed(args.seed)
    groups = mask_groups(gpa.cpu(), num_masked_patches(gpa.shape[1], mask_ratio), 1.0, schedule, generator=generator)
    display = settings.to_display(pixel_values)
    patch_size = teacher_encoder_of(model).config.patch_size
    checkpoint = os.path.basename(os.path.normpath(args.model_name_or_path))
    head_name = "all heads" if head is None else f"head {head}"

    reconstruction = None
    if hasattr(model, "decoder"):
        noise = noise_from_mask(groups != KEPT, generator=generator)
        reconstruction = mae_reconstruction(model, pixel_values, noise)
        reconstructed = settings.to_display(reconstruction["reconstruction"])
        pasted = settings.to_display(reconstruction["pasted"])

    os.makedirs(args.output_dir, exist_ok=True)
    written = []
    for index, (name, _) in enumerate(named):
        title = f"{checkpoint} | {name} | GPA block {layer}, {head_name}"
        figures = {"gpa": gpa_figure(display[index], gpa[index], groups[index], patch_size, title)}
        if reconstruction is not None:
            masked = grey_out(display[index], np.asarray(reconstruction["mask"][index]))
            figures["reconstruction"] = reconstruction_figure(
                display[index], masked, reconstructed[index], pasted[index], f"{title} | mask ratio {mask_ratio}"
            )
        for kind, figure in figures.items():
            path = os.path.join(args.output_dir, f"{kind}_{_file_name(name)}.png")
            figure.savefig(path, dpi=120)
            written.append(path)
    print(f"wrote {len(written)} figures to {args.output_dir}")
    return written


def main(argv: list[str] | None = None) -> None:
    exit_on_bad_input(run, parse_args(argv))


if __name__ == "__main__":
    main()
