"""Recording benchmark results: rows merged into a JSON list file, safely and atomically."""

import fcntl
import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from spacy_trf.encoder.backends.auto import cpu_name

__all__ = ["cpu_flags", "cpu_name", "merge_rows"]


def merge_rows(
    path: Path, rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable]
) -> list[dict[str, Any]]:
    """Replace the rows of ``path`` that share a key with a new row, append the new rows and
    return the merged list. A lock lets parallel runs record at once; readers never see a
    half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = {key(r) for r in rows}
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else []
        merged = [r for r in old if key(r) not in keys] + rows
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, indent=1) + "\n")
        tmp.replace(path)
    return merged


CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> str:
    """Which of the CPU flags that decide bf16 and int8 speed this machine has."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split())
    return " ".join(f for f in CPU_FLAGS if f in flags) or "none of " + " ".join(CPU_FLAGS)
