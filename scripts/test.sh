#!/usr/bin/env bash
# Setup, lint, then the test suite. Extra arguments go to pytest (e.g. tests/test_trainer.py -k resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
status=0
.venv/bin/python -m pytest tests/ "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
