#!/usr/bin/env bash
# Install the test tools and the reference implementations into the current Python, then run the tests.
# Extra arguments go to pytest (e.g. `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
bash scripts/install-test-deps.sh
"$PY" -m ruff check .
"$PY" -m pytest "$@"
