#!/usr/bin/env bash
# Install the test tools and the reference implementations into the current Python, then run the tests.
# Extra arguments go to pytest (e.g. `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -m pip install -q -e ".[test]"
"$PY" -m pip install -q -r tests/reference-runtime.txt
"$PY" -m pip install -q --no-deps -r tests/reference-requirements.txt
"$PY" -m ruff check .
"$PY" -m pytest "$@"
