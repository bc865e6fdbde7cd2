#!/usr/bin/env bash
# A separate venv with spacy-huggingface-pipelines 0.0.4, which needs transformers < 5 (so it
# cannot share spacy-trf's environment): .venv-shp, torch pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv .venv-shp
.venv-shp/bin/python -m pip install -q torch==2.13.0
.venv-shp/bin/python -m pip install -q -c constraints.txt spacy==3.8.18 spacy-huggingface-pipelines==0.0.4
