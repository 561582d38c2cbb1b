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
import importlib.util
import os
import secrets
import subprocess
import sys
import threading
from multiprocessing.connection import Listener


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


def start_page(backend_port: int, authkey: bytes, server_name: str, server_port: int) -> subprocess.Popen:
    """The explorer's page (``modeling_gpa/tools/explorer_page.py``, which imports gradio but not torch) in a process
    of its own, started before this one imports torch: the two sets of imports run on two cores at once.

    Its standard input carries the connection's key, then stays open: the page exits when this process does.
    """
    # The package's folder, found without importing it (its __init__ imports torch and transformers).
    package = importlib.util.find_spec("modeling_gpa").submodule_search_locations[0]
    page = os.path.join(package, "tools", "explorer_page.py")
    command = [sys.executable, "-P", page, "--backend_port", str(backend_port)]
    command += ["--server_name", server_name, "--server_port", str(server_port)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE)
    process.stdin.write(authkey.hex().encode() + b"\n")
    process.stdin.flush()
    return process


def exit_with_the_page(page: subprocess.Popen, stopping: threading.Event) -> None:
    """Ends this process when the page's process ends on its own (Ctrl-C, a port in use, a crash): nobody is left to
    answer. A page this process stops (``stopping`` set) leaves the exit to it."""
    code = page.wait()
    if not stopping.is_set():
        os._exit(code if code >= 0 else 1)


def serve(args: argparse.Namespace) -> None:
    """Starts the page, then imports torch, loads the checkpoint and answers the page until it disconnects."""
    authkey = secrets.token_bytes(32)
    stopping = threading.Event()
    with Listener(("127.0.0.1", 0), authkey=authkey) as listener:
        page = start_page(listener.address[1], authkey, args.server_name, args.server_port)
        watcher = threading.Thread(target=exit_with_the_page, args=(page, stopping), name="exit with the page")
        watcher.daemon = True
        watcher.start()
        try:
            from modeling_gpa.command_line import check_checkpoint, exit_on_bad_input
            from modeling_gpa.tools.explorer_app import serve_backend

            # The explorer loads GPA, ViTMAE or ViT classes, never a checkpoint's own code: one that needs it is
            # refused here.
            exit_on_bad_input(check_checkpoint, args.model_name_or_path)
            exit_on_bad_input(serve_backend, listener, args.model_name_or_path)
        except KeyboardInterrupt:
            pass
        finally:
            stopping.set()
            page.terminate()
            code = page.wait()
    # The page disconnected because it ended: its failure (a port in use) is this command's.
    if code > 0:
        sys.exit(code)


def write_space(args: argparse.Namespace) -> None:
    from modeling_gpa.command_line import check_checkpoint
    from modeling_gpa.training.hub import DEFAULT_SPACE_REQUIREMENT, write_space

    check_checkpoint(args.model_name_or_path)
    requirement = args.space_requirement or DEFAULT_SPACE_REQUIREMENT
    print(f"wrote the Space to {write_space(args.space_dir, args.model_name_or_path, requirement=requirement)}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.space_dir is not None:
        from modeling_gpa.command_line import exit_on_bad_input

        exit_on_bad_input(write_space, args)
    elif importlib.util.find_spec("gradio") is None:
        sys.exit("error: the explorer needs gradio: pip install 'modeling-gpa[demo]'")
    else:
        serve(args)


if __name__ == "__main__":
    main()
