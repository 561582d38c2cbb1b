#!/usr/bin/env bash
# Setup, lint, then the test suite (tests/). Arguments go to pytest: paths replace tests/, options alone keep it.
#   bash scripts/test.sh                      everything (CI)
#   bash scripts/test.sh -m "not slow"        the loop without subprocess, multi-process, compile and benchmark tests
#   bash scripts/test.sh tests/test_training_trainer.py -x
#   bash scripts/test.sh -n 0                 one process (pdb, print debugging)
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
# One pytest worker per core (pytest-xdist): each test runs single-threaded (tests/conftest.py), so two workers use
# two cores. An -n of the caller's wins.
parallel=(-n auto --dist worksteal)
for argument in "$@"; do
    if [[ "$argument" == -n* || "$argument" == --numprocesses* ]]; then
        parallel=()
    fi
done
.venv/bin/python -m pytest "${parallel[@]}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
