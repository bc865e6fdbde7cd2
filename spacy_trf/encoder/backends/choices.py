"""Where ``inference = "auto"`` remembers its choices across processes: ``inference.json`` under
``$SPACY_TRF_CACHE`` (default ``$XDG_CACHE_HOME/spacy-trf``, else ``~/.cache/spacy-trf``). The
file is read and written under a lock, so that processes choosing at once (``n_process``
workers) measure one after another and later ones find the first one's choice.
"""

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ...files import write_atomically

logger = logging.getLogger("spacy_trf")

CACHE_ENV = "SPACY_TRF_CACHE"
CACHE_FILE = "inference.json"
MAX_ENTRIES = 64  # the most recent choices kept (each model, machine and setting has one)


def cache_dir() -> Path | None:
    """``$SPACY_TRF_CACHE``, else the user's cache directory; ``None`` when ``SPACY_TRF_CACHE``
    is set empty (or there is no home directory): choose in every process."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:
            return None
    return Path(base) / "spacy-trf"


@contextmanager
def locked(directory: Path | None) -> Iterator[None]:
    """Hold the cache's lock file (where ``fcntl`` exists; elsewhere, or if the directory cannot
    be written, go on without a lock)."""
    handle = _lock(directory)
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def _lock(directory: Path | None) -> IO[str] | None:
    if directory is None:
        return None
    try:
        import fcntl
    except ImportError:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / ".inference.lock", "a")
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError:
        handle.close()
        return None
    return handle


def recall(directory: Path | None, key: str) -> dict[str, Any] | None:
    """The entry remembered for ``key``, if any."""
    entry = _read(directory).get(key)
    return entry if isinstance(entry, dict) else None


def remember(directory: Path | None, key: str, entry: dict[str, Any]) -> None:
    """Add ``entry`` for ``key``, keeping the ``MAX_ENTRIES`` newest; the file is written whole,
    atomically. Failing to write is logged, not raised."""
    if directory is None:
        return
    path = directory / CACHE_FILE
    data = _read(directory)
    data.pop(key, None)
    data[key] = entry
    data = dict(list(data.items())[-MAX_ENTRIES:])
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))
    except OSError as error:
        logger.warning("Could not remember the inference choice in %s: %s", path, error)


def _read(directory: Path | None) -> dict[str, Any]:
    if directory is None:
        return {}
    try:
        data = json.loads((directory / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}  # missing or unreadable: choose again and rewrite it
    return data if isinstance(data, dict) else {}
