"""Few-shot attention selection (paper section 3.4): which teacher block and head should score the patches.

Scores every (block, head) of a checkpoint, and every block with all heads summed, by object recall (the share of
its top-k GPA patches that lie on the annotated object, k = the number of masked patches) on a few annotated images,
breaks recall ties by the average precision of the object patches in each candidate's GPA ranking, re-measures the
choice (and, when the tie-break changed it, the row-major choice) on held-out ones, and writes:

    OUTPUT_DIR/head_selection.json   the recall and average-precision tables, the choice, the held-out numbers
    OUTPUT_DIR/head_selection.png    the two heat maps (rows blocks, columns heads + "all"), choice outlined

Ground truth: ``--dataset_name fashion_mnist`` (the garment's pixels), ``--dataset_name cluttered_fashion_mnist``
(its ``object_mask``), or ``--image_dir DIR`` with masks (``--masks_dir``, default ``DIR/masks/<stem>.png``) or
boxes (``--boxes_json``, ``{"file.jpg": [[x0, y0, x1, y1], ...]}`` in pixels).

    python run_scripts/run_select_head.py --model_name_or_path outputs/gpa-fmnist \\
        --dataset_name fashion_mnist --num_images 10 --num_heldout 2000 --output_dir outputs/selection \\
        --write_config outputs/selection/gpa_config.json
"""

from __future__ import annotations

import argparse
import copy
import os

from modeling_gpa import GPAConfig
from modeling_gpa.command_line import TRUST_REMOTE_CODE_HELP, exit_on_bad_input
from modeling_gpa.data import load_image_datasets
from modeling_gpa.data.ground_truth import annotated_model_inputs
from modeling_gpa.data.image_inputs import ImageSettings
from modeling_gpa.head_selection import (
    HeadSelection,
    format_selection,
    load_scoring_model,
    select_head_for_pretraining,
    teacher_encoder_of,
)
from modeling_gpa.tools.visualization import recall_heatmap_figure

# Config keys that describe a checkpoint rather than an architecture: not carried into a new GPA config.
NON_ARCHITECTURE_KEYS = ("model_type", "architectures", "transformers_version", "auto_map", "dtype", "torch_dtype")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="GPA, ViTMAE or ViT checkpoint directory.")
    source = parser.add_argument_group("ground truth (one source)")
    source.add_argument("--dataset_name", help="fashion_mnist or cluttered_fashion_mnist (or a dataset with masks).")
    source.add_argument("--dataset_split", default="validation", help="Split of --dataset_name (default validation).")
    source.add_argument("--image_column_name", default=None, help="Image column of --dataset_name (default: guessed).")
    source.add_argument(
        "--mask_column",
        default="auto",
        help="Mask column of --dataset_name; 'none': the image's non-zero pixels (objects on black); "
        "'auto' (default): object_mask if present, else 'none'.",
    )
    source.add_argument("--image_dir", help="Folder of annotated images.")
    source.add_argument("--masks_dir", help="Binary masks <stem>.png for --image_dir (default IMAGE_DIR/masks).")
    source.add_argument("--boxes_json", help='Boxes for --image_dir: {"file.jpg": [[x0, y0, x1, y1], ...]}.')
    parser.add_argument("--num_images", type=int, default=10, help="Selection images (default 10, as the paper).")
    parser.add_argument("--num_heldout", type=int, default=0, help="Held-out images to re-measure the choice on.")
    parser.add_argument("--mask_ratio", type=float, default=None, help="Sets k (default: the checkpoint's).")
    parser.add_argument(
        "--min_object_fraction",
        type=float,
        default=0.5,
        help="Share of a patch's pixels that must be object for the patch to count as object (default 0.5).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Which images are drawn.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--trust_remote_code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    parser.add_argument(
        "--write_config", default=None, help="Write a GPAConfig JSON with the chosen gpa_layer / gpa_head here."
    )
    args = parser.parse_args(argv)
    if (args.dataset_name is None) == (args.image_dir is None):
        parser.error("give exactly one ground-truth source: --dataset_name or --image_dir")
    if args.image_dir is not None and args.masks_dir is not None and args.boxes_json is not None:
        parser.error("--masks_dir and --boxes_json are alternatives: give one")
    if args.num_images < 1 or args.num_heldout < 0:
        parser.error("--num_images must be at least 1 and --num_heldout at least 0")
    return args


def annotated_dataset(args: argparse.Namespace):
    """(split of --dataset_name, its image column), or (None, "image") when the images come from --image_dir."""
    if args.image_dir is not None:
        return None, "image"
    datasets, image_column = load_image_datasets(
        dataset_name=args.dataset_name, image_column_name=args.image_column_name
    )
    if args.dataset_split not in datasets:
        raise ValueError(
            f"--dataset_split {args.dataset_split!r} does not exist; choose one of {', '.join(sorted(datasets))}."
        )
    return datasets[args.dataset_split], image_column


def chosen_config(model, model_name_or_path: str, selection: HeadSelection, mask_ratio: float | None) -> GPAConfig:
    """The checkpoint's GPA config with the chosen block and head; for a ViTMAE / ViT checkpoint, a GPA config of the
    same architecture that uses it as its frozen pretrained teacher (the paper's setting)."""
    if isinstance(model.config, GPAConfig):
        config = copy.deepcopy(model.config)
    else:
        architecture = {k: v for k, v in model.config.to_dict().items() if k not in NON_ARCHITECTURE_KEYS}
        teacher = os.path.abspath(model_name_or_path) if os.path.isdir(model_name_or_path) else model_name_or_path
        config = GPAConfig(**architecture, gpa_teacher="pretrained", gpa_teacher_name_or_path=teacher)
    config.gpa_layer, config.gpa_head = selection.best_layer, selection.best_head
    if mask_ratio is not None:
        config.mask_ratio = mask_ratio
    config.validate_gpa()
    return config


def write_config(config: GPAConfig, path: str) -> str:
    """Writes ``config`` as JSON at ``path`` (``path/config.json`` when ``path`` is a directory)."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    config.to_json_file(path)
    return path


def run(args: argparse.Namespace) -> HeadSelection:
    model = load_scoring_model(args.model_name_or_path, args.trust_remote_code)
    settings = ImageSettings.from_pretrained(args.model_name_or_path, model.config)
    dataset, image_column = annotated_dataset(args)
    pixel_values, objects = annotated_model_inputs(
        args.num_images + args.num_heldout,
        settings,
        teacher_encoder_of(model).config.patch_size,
        dataset=dataset,
        image_column=image_column,
        mask_column=None if args.mask_column == "none" else args.mask_column,
        image_dir=args.image_dir,
        masks_dir=args.masks_dir,
        boxes_json=args.boxes_json,
        min_object_fraction=args.min_object_fraction,
        seed=args.seed,
    )
    selection = select_head_for_pretraining(
        model,
        pixel_values[: args.num_images],
        objects[: args.num_images],
        output_dir=args.output_dir,
        heldout_pixel_values=pixel_values[args.num_images :],
        heldout_object_patches=objects[args.num_images :],
        mask_ratio=args.mask_ratio,
        apply=False,
        batch_size=args.batch_size,
    )
    name = os.path.basename(os.path.normpath(args.model_name_or_path))
    figure = recall_heatmap_figure(
        selection.recall,
        selection.best_layer,
        selection.best_head,
        f"{name}: object recall of the top-{selection.num_masked} GPA patches (left) and average precision of the "
        f"object patches in the GPA ranking (right, breaks recall ties)\n"
        f"{selection.num_images} images; a random mask scores {selection.object_coverage:.2f}, "
        f"the most possible recall is {selection.recall_ceiling:.2f}",
        average_precision=selection.average_precision,
    )
    figure.savefig(os.path.join(args.output_dir, "head_selection.png"), dpi=150)
    print(format_selection(selection))
    print(f"wrote {os.path.join(args.output_dir, 'head_selection.json')} and head_selection.png")
    if args.write_config is not None:
        path = write_config(
            chosen_config(model, args.model_name_or_path, selection, args.mask_ratio), args.write_config
        )
        print(f"wrote {path}: gpa_layer={selection.best_layer}, gpa_head={selection.best_head}")
    return selection


def main(argv: list[str] | None = None) -> None:
    exit_on_bad_input(run, parse_args(argv))


if __name__ == "__main__":
    main()
