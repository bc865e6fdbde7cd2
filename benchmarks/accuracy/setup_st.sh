#!/usr/bin/env bash
# The spacy-transformers 1.4.0 baseline's own virtual environment (.venv-st), with the local
# CPU torch 2.13.0 pinned so that pip never pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${ST_VENV:-.venv-st}
python3 -m venv "$VENV"
constraints=$(mktemp)
echo "torch==2.13.0" > "$constraints"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q -c "$constraints" spacy==3.8.18 spacy-transformers==1.4.0 transformers==4.53.2
"$VENV/bin/python" -c "import spacy_transformers, transformers, torch; print('spacy-transformers venv:', transformers.__version__, torch.__version__)"
