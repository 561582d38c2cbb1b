"""The GPA explorer in the browser: any GPA, ViTMAE or ViT checkpoint, any image, every block and head.

Upload an image or pick a bundled one (scikit-image photos, Fashion-MNIST samples); choose the block, the head (each
one, the sum of heads, or the checkpoint's own choice), the score variant, the mask ratio and the training progress;
see the GPA heat map, the soft-to-hard mask (Eq. 6) with its hard / soft / random counts, and MAE's reconstruction
under that mask. With an object mask, the share of the object the mask hides, and every block x head ranked by it.
Serves on 127.0.0.1:7860 by default, never through a share link. Needs the demo extra: pip install '.[demo]'.

    python run_scripts/gpa_explorer.py --model_name_or_path outputs/gpa-fashion-mnist
    python run_scripts/gpa_explorer.py --model_name_or_path user/gpa-vit-base --space_dir outputs/space
"""

from __future__ import annotations

import argparse

from modeling_gpa.command_line import check_checkpoint, exit_on_bad_input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model_name_or_path", required=True, help="GPA, ViTMAE or ViT checkpoint (directory or Hub id)."
    )
    parser.add_argument("--server_name", default="127.0.0.1", help="Address to serve on (default: 127.0.0.1).")
    parser.add_argument("--server_port", type=int, default=7860, help="Port to serve on (default: 7860).")
    parser.add_argument(
        "--space_dir",
        default=None,
        help="Write a Hugging Face Space folder (app.py, requirements.txt, README.md) for the Hub checkpoint "
        "--model_name_or_path here and exit, instead of serving.",
    )
    parser.add_argument(
        "--space_requirement",
        default=None,
        help="The requirements.txt line that installs this package in the Space (default: modeling-gpa[demo]).",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    # The explorer loads GPA, ViTMAE or ViT classes, never a checkpoint's own code: one that needs it is refused here.
    check_checkpoint(args.model_name_or_path)
    if args.space_dir is not None:
        from modeling_gpa.training.hub import DEFAULT_SPACE_REQUIREMENT, write_space

        requirement = args.space_requirement or DEFAULT_SPACE_REQUIREMENT
        print(f"wrote the Space to {write_space(args.space_dir, args.model_name_or_path, requirement=requirement)}")
        return
    try:
        from modeling_gpa.tools.explorer_app import launch
    except ImportError as error:
        raise ValueError(f"the explorer needs gradio ({error}): pip install 'modeling-gpa[demo]'") from None
    launch(args.model_name_or_path, args.server_name, args.server_port)


def main(argv: list[str] | None = None) -> None:
    exit_on_bad_input(run, parse_args(argv))


if __name__ == "__main__":
    main()
