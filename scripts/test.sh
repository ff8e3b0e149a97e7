#!/usr/bin/env bash
# Install everything the tests need, then lint, type-check and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg
bash scripts/setup.sh dev,crafter,dmc,atari,data,studio,sb3
PY=${PYTHON:-python3}
"$PY" -m ruff check src tests benchmarks
"$PY" -m ruff format --check src tests benchmarks
"$PY" -m mypy src/reverie
"$PY" -m pytest tests src/reverie "$@"   # src/reverie: the docstring examples (doctest)
