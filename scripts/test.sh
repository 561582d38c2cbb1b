#!/usr/bin/env bash
# Setup, lint, then the test suite (tests/). Arguments replace that path: bash scripts/test.sh tests/test_training_trainer.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
status=0
if [ "$#" -eq 0 ]; then
    set -- tests/
fi
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
