#!/usr/bin/env bash
# Set up Reverie on a fresh machine: CPU PyTorch first (pinned, so pip never pulls CUDA wheels), then the
# package itself. Usage: bash scripts/setup.sh [extras], e.g. `bash scripts/setup.sh dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
"$PY" -m pip install --quiet --disable-pip-version-check -e "$spec"
