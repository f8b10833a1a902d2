#!/usr/bin/env bash
# The project (with its test tools) plus the reference implementations the tests and the
# benchmark compare against, into the current Python. References go in with --no-deps so none
# of them can move torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -m pip install -q ".[test]"  # not editable: an editable install of this flat layout warns on every install
"$PY" install.py  # PyMatting's kernels compiled once here, not inside the first test that refines a mask
"$PY" -m pip install -q -r tests/reference-runtime.txt
"$PY" -m pip install -q --no-deps -r tests/reference-requirements.txt
# Meta's sam2 (the SAM 2 / 2.1 reference) is published as source only: build it against the torch
# already here, without the CUDA extension its setup.py would try (the image path does not use it).
SAM2_BUILD_CUDA=0 "$PY" -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
# Meta's EdgeTAM (the EdgeTAM reference) as packaged on PyPI by edgetam-dimos: Meta's files, its package also
# named sam2, so it goes into a folder of its own that only tests/edgetam_reference.py puts on sys.path.
EDGETAM_REFERENCE=$("$PY" -c 'import sys; print(sys.prefix)')/edgetam-reference
"$PY" -m pip install -q --no-deps --upgrade --target "$EDGETAM_REFERENCE" edgetam-dimos==1.0.1
