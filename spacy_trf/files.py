"""Writing files and directories so that no reader, and no failure, ever sees one half-written."""

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

PARTIAL, OLD = ".partial-", ".old-"  # prefixes of the directories beside the target
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, then move it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600: others on a shared FS read it too
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def replace_dir(
    path: str | Path, write: Callable[[Path], None], *, keep_others: bool = False
) -> None:
    """Let ``write`` fill a new directory beside ``path``, then swap it in for ``path``.

    If ``write`` fails, ``path`` stays as it was (or absent) and nothing else is left behind.
    keep_others (bool): Entries of the old directory that ``write`` did not create are kept
        (hard-linked into the new one), as writing into the old directory would keep them.
    Where a rename cannot replace ``path`` (a mount point, the working directory or one above
    it, a parent you may not write), ``write`` fills ``path`` in place instead.
    """
    path = Path(path).resolve()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"'{path}' is a file: give a directory to save into.")
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    if not _swappable(path):
        path.mkdir(exist_ok=True)
        write(path)  # in place, as spaCy writes
        return
    tag = uuid.uuid4().hex[:8]
    new = path.with_name(f"{PARTIAL}{path.name}-{tag}")
    old = path.with_name(f"{OLD}{path.name}-{tag}")
    new.mkdir()  # with the umask's mode (tempfile.mkdtemp would make it private)
    try:
        write(new)
        if not path.exists():
            os.replace(new, path)
            return
        if keep_others:
            _link_missing(path, new)
        os.replace(path, old)  # set aside first: a kill now leaves it for _recover
        try:
            os.replace(new, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)


def _swappable(path: Path) -> bool:
    """Whether ``path`` can be replaced by a rename: not a mount point, not (above) the working
    directory, and its parent writable."""
    cwd = Path.cwd().resolve()
    if cwd == path or path in cwd.parents or os.path.ismount(path):
        return False
    return os.access(path.parent, os.W_OK | os.X_OK)


def _recover(path: Path) -> None:
    """Undo what a killed replace_dir left beside ``path``: the old directory goes back where
    none is, unfinished new ones go."""
    for stale in path.parent.glob(f"{PARTIAL}{path.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in sorted(path.parent.glob(f"{OLD}{path.name}-*")):
        if not path.exists():
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)


def _link_missing(source: Path, target: Path) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for entry in source.iterdir():
        if os.path.lexists(target / entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target / entry.name, copy_function=link, symlinks=True)
        else:
            link(str(entry), str(target / entry.name))
