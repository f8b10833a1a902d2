#!/usr/bin/env bash
# Install the test tools and the reference implementations into the current Python, install the two
# real ComfyUI servers (each in its own virtualenv under .comfyui/), then run the tests: the unit
# and parity tests and the real-ComfyUI suite (tests/comfyui). Extra arguments go to pytest
# (e.g. `tests/comfyui` for the ComfyUI suite alone, or `-k cli`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
bash scripts/install-test-deps.sh
bash scripts/install-comfyui.sh
"$PY" -m ruff check .
GROUNDED_SAM_REQUIRE_COMFYUI=1 "$PY" -m pytest "$@"
