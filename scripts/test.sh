#!/usr/bin/env bash
# Setup, lint, then the test suite (tests/). Arguments go to pytest: paths replace tests/, options alone keep it.
#   bash scripts/test.sh                      everything (CI)
#   bash scripts/test.sh -m "not slow"        the loop without subprocess, multi-process and benchmark tests
#   bash scripts/test.sh tests/test_training_trainer.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
status=0
# A test path is an argument naming a file or folder of the checkout (a node id's file before its "::").
names_a_path=0
for argument in "$@"; do
    if [[ "$argument" != -* && -e "${argument%%::*}" ]]; then
        names_a_path=1
    fi
done
if [ "$names_a_path" -eq 0 ]; then
    set -- "$@" tests/
fi
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
