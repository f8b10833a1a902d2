#!/usr/bin/env bash
# The project (editable, with test tools) plus the reference implementations the tests and the
# benchmark compare against, into the current Python. References go in with --no-deps so none
# of them can move torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -m pip install -q -e ".[test]"
"$PY" -m pip install -q -r tests/reference-runtime.txt
"$PY" -m pip install -q --no-deps -r tests/reference-requirements.txt
