#!/usr/bin/env bash
# The tests, from a fresh machine, in one command:
#
#   bash scripts/test.sh            the full suite: unit, parity and the real-ComfyUI suite on 0.3.75 and 0.33.0
#   bash scripts/test.sh --quick    a few minutes: the unit tests (not the system tests, which start other
#                                   processes or a cluster), one parity case per model family and one
#                                   real-ComfyUI case on ComfyUI 0.33.0
#
# Outside a virtualenv it makes one (.venv, or $VENV) with the pinned torch pair installed first; then it
# installs the test tools and reference implementations, the real ComfyUI servers (each in its own
# virtualenv under .comfyui/), runs ruff and pytest. Other arguments go to pytest (e.g. `tests/comfyui`
# for the ComfyUI suite alone, or `-k cli`). The run ends with where the time went: installs, each tier
# of tests, and the ten slowest tests.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
ARGS=()
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then QUICK=1; else ARGS+=("$arg"); fi
done

INSTALLS=()
timed() {  # timed NAME COMMAND...: run it, remember how long it took
    local name=$1 start
    shift
    start=$(date +%s)
    "$@"
    INSTALLS+=("$name $(($(date +%s) - start))s")
}

if [ -z "${PYTHON:-}" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    VENV=${VENV:-.venv}
    make_venv() {
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1  # the pinned pair first, always
    }
    timed "venv+torch" make_venv
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
fi
PY=${PYTHON:-python}
"$PY" -c "import torch, torchvision; from torchvision.ops import nms; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

timed "test-deps" bash scripts/install-test-deps.sh
if [ "$QUICK" = 1 ]; then
    export GROUNDED_SAM_COMFYUI_VERSIONS=0.33.0
    timed "comfyui-0.33.0" bash scripts/install-comfyui.sh 0.33.0
    ARGS=(-m "quick or not (parity or comfyui or system)" "${ARGS[@]}")
else
    timed "comfyui-0.3.75+0.33.0" bash scripts/install-comfyui.sh 0.3.75 0.33.0  # side by side
    timed "impact-pack" bash scripts/install-impact.sh 0.3.75 0.33.0
fi
"$PY" -m ruff check .
export GROUNDED_SAM_INSTALL_TIMES="${INSTALLS[*]}"  # printed with the tests' split at the end
GROUNDED_SAM_REQUIRE_COMFYUI=1 "$PY" -m pytest "${ARGS[@]}"
