"""Imported first by the interop benchmarks: offline Hugging Face settings, and the benchmark
helpers (benchmarks/record.py, benchmarks/speed/worker.py) on the path."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for path in (HERE.parent / "speed", HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
