#!/usr/bin/env bash
# The project (with its test tools) plus the reference implementations the tests and the
# benchmark compare against, into the current Python. References go in with --no-deps so none
# of them can move torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -m pip install -q ".[test]"  # not editable: an editable install of this flat layout warns on every install
"$PY" -m pip install -q -r tests/reference-runtime.txt
"$PY" -m pip install -q --no-deps -r tests/reference-requirements.txt
