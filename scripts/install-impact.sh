#!/usr/bin/env bash
# Install Impact Pack (../shared/impact-pack, a test-only install) beside each real ComfyUI server the suite
# runs, for the interop cases (tests/comfyui/test_impact.py):
#
#   bash scripts/install-impact.sh [0.3.75] [0.33.0]     (default: both; run scripts/install-comfyui.sh first)
#
# Impact needs OpenCV, ultralytics, scikit-image and more, which this pack must never come to depend on. So
# they do not go into the ComfyUI virtualenv the other cases run in: each version gets `impact/venv`, a
# virtualenv layered on ComfyUI's (its site-packages read through a .pth file, every package already there
# pinned as it is), holding only what Impact adds; and `impact/custom_nodes/`, which the suite adds to that
# server's custom node folders. Impact's install.py is not run: it clones from GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEST=${GROUNDED_SAM_COMFYUI_DIR:-$ROOT/.comfyui}
SHARED=${GROUNDED_SAM_SHARED_DIR:-$ROOT/../shared}
ARCHIVE=$SHARED/impact-pack/comfyui-impact-pack-7.10.6.tar.gz
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(0.3.75 0.33.0)
# What Impact Pack 7.10.6 imports at start (its README in ../shared/impact-pack; its numpy<2 pin is not needed).
IMPACT_NEEDS=(segment-anything scikit-image piexif opencv-python-headless GitPython dill matplotlib ultralytics)

install_version() {
    local version=$1 base=$DEST/$1 home=$DEST/$1/impact
    if [ ! -f "$base/.installed" ]; then
        echo "ComfyUI $version is not installed in $base: run scripts/install-comfyui.sh $version first" >&2
        exit 2
    fi
    local stamp
    stamp=$(cat "$0" "$base/.installed" "$ARCHIVE" | sha256sum | cut -c1-16)
    if [ "$(cat "$home/.installed" 2>/dev/null)" = "$stamp" ]; then
        echo "Impact Pack for ComfyUI $version: already installed in $home"
        return
    fi
    echo "Impact Pack for ComfyUI $version: installing into $home"
    rm -rf "$home"
    mkdir -p "$home/custom_nodes"
    tar xzf "$ARCHIVE" -C "$home/custom_nodes"
    local base_py=$base/venv/bin/python
    "$base_py" -m venv --without-pip "$home/venv"  # the same interpreter as ComfyUI's virtualenv
    local layer base_site
    layer=$("$home/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    base_site=$("$base_py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    # addsitedir (not a bare path) so that the .pth files inside ComfyUI's site-packages are read too
    echo "import site; site.addsitedir('$base_site')" > "$layer/zz_comfyui_base.pth"
    local work
    work=$(mktemp -d)
    "$base_py" -m pip freeze --exclude-editable | grep -v '^-e ' > "$work/constraints.txt"  # nothing of ComfyUI's moves
    # pip itself comes from ComfyUI's virtualenv, through the layer
    "$home/venv/bin/python" -m pip install -q -c "$work/constraints.txt" "${IMPACT_NEEDS[@]}"
    "$home/venv/bin/python" -c "import cv2, torch, ultralytics; print('Impact layer for ComfyUI $version: torch', torch.__version__, 'cv2', cv2.__version__)"
    rm -rf "$work"
    echo "$stamp" > "$home/.installed"
}

for version in "${VERSIONS[@]}"; do
    install_version "$version"
done
