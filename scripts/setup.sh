#!/usr/bin/env bash
# Idempotent setup: .venv with torch 2.14.1 + torchvision 0.29.1, this package editable with its dev extras (timm
# among its dependencies), its deepspeed extra (so the tests run the DeepSpeed ZeRO-2 launch we ship), its demo
# extra (gradio, for the explorer) and its mmseg extra (mmsegmentation, which the tests load our weights into),
# Fashion-MNIST, and Chromium with its WebDriver (the explorer's browser test).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python=$(command -v python3.11 || command -v python3) || { echo "setup.sh: install python3 (3.11) first" >&2; exit 1; }
    echo "Creating .venv with $python"
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check --quiet)

# torch and torchvision first, pinned together: torchvision's compiled ops work only with the torch they were built
# for, and this pair (the CUDA build, which also runs on the CPU) is the one the package index here serves.
if ! .venv/bin/python -c '
import sys, torch, torchvision
sys.exit(torch.__version__.split("+")[0] != "2.14.1" or torchvision.__version__.split("+")[0] != "0.29.1")
' 2>/dev/null; then
    echo "Installing torch 2.14.1 and torchvision 0.29.1"
    "${pip[@]}" install torch==2.14.1 torchvision==0.29.1
fi

# Reinstall only when the package metadata changed (the install is editable: code changes need nothing).
stamp=.venv/.modeling-gpa-setup
wanted=$(cat setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/pip show --quiet modeling-gpa 2>/dev/null; then
    echo "Installing modeling-gpa (editable, with dev, deepspeed, demo and mmseg extras)"
    "${pip[@]}" install -e '.[dev,deepspeed,demo,mmseg]'
    echo "$wanted" >"$stamp"
fi

can_apt=true sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n); else can_apt=false; fi
fi

# apt_install HINT PACKAGE... : Debian packages as root (or through sudo); without either, a warning with HINT.
apt_install() {
    local hint=$1
    shift
    if ! $can_apt; then
        echo "setup.sh: $* missing: run 'sudo apt-get install $*'$hint" >&2
        return 0
    fi
    echo "Installing Debian's $*"
    if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@"; }; then
        echo "setup.sh: apt-get could not install $*; the tests that need it will fail" >&2
    fi
}

fashion_mnist=${GPA_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -d "$fashion_mnist" ]; then
    apt_install ", or set GPA_FASHION_MNIST_DIR to a folder with its gzip IDX files" dataset-fashion-mnist
fi
# The explorer's browser test drives Debian's Chromium through its WebDriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install "" chromium chromium-driver
fi
