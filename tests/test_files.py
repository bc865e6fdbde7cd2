"""replace_dir: a directory is the old one or the new one, never a mix, whatever fails."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from spacy_trf.files import replace_dir


def write_files(**files: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        for name, text in files.items():
            (path / name).write_text(text)

    return write


def test_replace_keeps_others_and_leaves_nothing_beside(tmp_path: Path) -> None:
    target = tmp_path / "p"
    replace_dir(target, write_files(a="1", b="1"))
    (target / "mine.txt").write_text("user")
    replace_dir(target, write_files(a="2"), keep_others=True)
    assert {p.name: p.read_text() for p in target.iterdir()} == {
        "a": "2",
        "b": "1",
        "mine.txt": "user",
    }
    replace_dir(target, write_files(a="3"))
    assert [p.name for p in target.iterdir()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_failed_write_leaves_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "p"
    replace_dir(target, write_files(a="1"))

    def fail(path: Path) -> None:
        (path / "a").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_dir(target, fail)
    assert (target / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["p"]


def test_what_a_killed_swap_left_is_recovered(tmp_path: Path) -> None:
    """Killed after setting the old directory aside: the next save puts it back first."""
    (tmp_path / ".old-p-1234").mkdir()
    (tmp_path / ".old-p-1234" / "a").write_text("old")
    (tmp_path / ".partial-p-5678").mkdir()
    replace_dir(tmp_path / "p", write_files(b="new"), keep_others=True)
    assert {p.name: p.read_text() for p in (tmp_path / "p").iterdir()} == {"a": "old", "b": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_the_working_directory_is_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    replace_dir(".", write_files(a="1"))
    assert os.getcwd() == str(tmp_path) and (tmp_path / "a").read_text() == "1"


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        replace_dir(tmp_path / "f", write_files(a="1"))
