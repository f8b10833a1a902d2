#!/usr/bin/env bash
# Benchmark ours against the seed pack's reference pipeline; arguments go to bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
"${PYTHON:-python}" bench/run.py "$@"
