"""Corpus input -> shards: fixed input ranges that a worker reads, annotates and writes as one
output file, so that a stopped run resumes by shard and every document is written once.

- JSONL (``.jsonl``/``.json``): byte ranges of about ``shard_mb``; a line belongs to the shard
  where it starts. Objects have ``text`` and optionally ``id`` and ``meta``; without ``id`` a
  document is ``FILE:LINE`` (1-based).
- Parquet: runs of row groups; a ``text`` column, optionally ``id`` and ``meta``; default id
  ``FILE:ROW`` (0-based).
- A folder of ``.txt`` files (one document each), ``files_per_shard`` at a time; id: the path
  below the folder.

Paths are local or any filesystem pyarrow opens (``s3://``, ``gs://``, ``hdfs://``), as for Ray
Data.
"""

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

CHUNK = 1 << 16
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class Shard:
    """One input range. jsonl: bytes [start, end) of ``files[0]`` and ``newlines_before``, the
    newlines before ``start``; parquet: row groups [start, end) of ``files[0]``, the first row
    ``first_row``; txt: the ``files``."""

    index: int
    kind: str
    files: tuple[str, ...]
    start: int = 0
    end: int = 0
    newlines_before: int = 0
    first_row: int = 0
    n_docs: int = 0  # documents (jsonl: lines) it holds, for the progress bar
    root: str = ""  # txt: the input folder, which ids are relative to

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Shard":
        data = json.loads(text)
        return cls(**{**data, "files": tuple(data["files"])})


@dataclass
class Item:
    """A document read from a shard, or (``error`` set) a line that could not be read."""

    id: str
    text: str = ""
    meta: Any = None
    error: str | None = None
    position: int = 0  # in its shard


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a path or URI (local paths made absolute)."""
    if "://" not in path:
        path = str(Path(path).expanduser().resolve())
    fs, inner = pafs.FileSystem.from_uri(path)
    return fs, inner


def _stat(path: str) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    """The filesystem, inner path and file info of an input that exists."""
    fs, inner = filesystem(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(
            f"No input at '{path}': give a .jsonl file, a Parquet file or a folder of .txt files."
        )
    return fs, inner, info


def fingerprint(path: str) -> list[dict[str, Any]]:
    """What the input is: its files (a folder's .txt files, in order) with their sizes and
    modification times."""
    fs, inner, info = _stat(path)
    infos = [info] if info.type == pafs.FileType.File else _txt_files(fs, inner)
    return [{"path": i.path, "size": i.size, "mtime_ns": i.mtime_ns} for i in infos]


def _txt_files(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(folder, recursive=True)
    files = [i for i in fs.get_file_info(selector) if i.is_file and i.path.endswith(".txt")]
    if not files:
        raise FileNotFoundError(f"'{folder}' holds no .txt files.")
    return sorted(files, key=lambda i: i.path)


def plan_shards(
    path: str,
    shard_mb: float = 8.0,
    files_per_shard: int = 256,
    listing: list[dict[str, Any]] | None = None,
) -> list[Shard]:
    """Cut the input into shards (jsonl newline counts are filled in by ``count_newlines``).
    ``listing``: the input's ``fingerprint``, if already taken (a folder is listed once)."""
    fs, inner, info = _stat(path)
    scheme = path.split("://")[0] + "://" if "://" in path else ""
    if info.type == pafs.FileType.Directory:
        names = [f["path"] for f in listing or fingerprint(path)]
        files = [scheme + name for name in names]
        groups = [files[i : i + files_per_shard] for i in range(0, len(files), files_per_shard)]
        return [Shard(k, "txt", tuple(g), n_docs=len(g), root=inner) for k, g in enumerate(groups)]
    if inner.endswith(".parquet"):
        return _parquet_shards(fs, inner, scheme, shard_mb)
    if inner.endswith(JSONL_SUFFIXES):
        step = max(1, int(shard_mb * 2**20))
        size = int(info.size or 0)
        starts = list(range(0, size, step)) or [0]
        return [
            Shard(k, "jsonl", (scheme + inner,), s, min(s + step, size))
            for k, s in enumerate(starts)
        ]
    raise ValueError(
        f"Unsupported input '{path}': use a .jsonl file (one JSON object per line with 'text'), "
        "a .parquet file with a 'text' column, or a folder of .txt files."
    )


def _parquet_shards(fs: pafs.FileSystem, path: str, scheme: str, shard_mb: float) -> list[Shard]:
    meta = pq.ParquetFile(fs.open_input_file(path)).metadata
    if "text" not in meta.schema.names:
        raise ValueError(f"'{path}' has no 'text' column (columns: {meta.schema.names}).")
    shards: list[Shard] = []
    group, row, size, n = 0, 0, 0, 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        n += meta.row_group(g).num_rows
        if size >= shard_mb * 2**20 or g == meta.num_row_groups - 1:
            files = (scheme + path,)
            shards.append(
                Shard(len(shards), "parquet", files, group, g + 1, first_row=row, n_docs=n)
            )
            group, row, size, n = g + 1, row + n, 0, 0
    return shards


def count_newlines(shard: Shard) -> int:
    """Newlines in a jsonl shard's byte range."""
    fs, _ = filesystem(shard.files[0])
    with fs.open_input_file(shard.files[0]) as f:
        f.seek(shard.start)
        return f.read(shard.end - shard.start).count(b"\n")


def read_shard(shard: Shard) -> Iterator[Item]:
    """The documents of a shard, in input order."""
    if shard.kind == "jsonl":
        yield from _read_jsonl(shard)
    elif shard.kind == "parquet":
        yield from _read_parquet(shard)
    else:
        yield from _read_txt(shard)


def _read_jsonl(shard: Shard) -> Iterator[Item]:
    path = shard.files[0]
    fs, _ = filesystem(path)
    name = Path(path).name
    with fs.open_input_file(path) as f:
        size = f.size()
        pos, line_index = shard.start, shard.newlines_before
        if pos > 0:
            f.seek(pos - 1)
            if f.read(1) != b"\n":  # the line in progress belongs to the shard before
                pos, line_index = _after_newline(f, pos, size), line_index + 1
        if pos >= shard.end:
            return
        f.seek(pos)
        data = f.read(shard.end - pos)
        while not data.endswith(b"\n") and pos + len(data) < size:  # finish the last line
            more = f.read(CHUNK)
            cut = more.find(b"\n")
            data += more if cut < 0 else more[: cut + 1]
            if cut >= 0 or not more:
                break
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    for offset, line in enumerate(lines):
        if line.strip():
            yield _jsonl_item(line, f"{name}:{line_index + offset + 1}")


def _after_newline(f: Any, pos: int, size: int) -> int:
    """The position just after the first newline at or after ``pos`` (or ``size``)."""
    f.seek(pos)
    while pos < size:
        chunk = f.read(CHUNK)
        if not chunk:
            break
        cut = chunk.find(b"\n")
        if cut >= 0:
            return pos + cut + 1
        pos += len(chunk)
    return size


def _jsonl_item(line: bytes, default_id: str) -> Item:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return Item(default_id, error=f"unreadable JSON line: {err}")
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return Item(default_id, error="the line is not a JSON object with a string 'text'")
    doc_id = record.get("id")
    return Item(default_id if doc_id is None else str(doc_id), record["text"], record.get("meta"))


def _read_parquet(shard: Shard) -> Iterator[Item]:
    path = shard.files[0]
    fs, _ = filesystem(path)
    parquet = pq.ParquetFile(fs.open_input_file(path))
    columns = [c for c in ("text", "id", "meta") if c in parquet.schema_arrow.names]
    table = parquet.read_row_groups(list(range(shard.start, shard.end)), columns=columns)
    name = Path(path).name
    for i, row in enumerate(table.to_pylist()):
        doc_id = row.get("id")
        doc_id = f"{name}:{shard.first_row + i}" if doc_id is None else str(doc_id)
        if not isinstance(row["text"], str):
            yield Item(doc_id, error="'text' is not a string")
        else:  # meta as JSON values (timestamps, decimals become strings)
            yield Item(doc_id, row["text"], json.loads(json.dumps(row.get("meta"), default=str)))


def _read_txt(shard: Shard) -> Iterator[Item]:
    for path in shard.files:
        fs, inner = filesystem(path)
        doc_id = str(Path(inner).relative_to(shard.root))
        try:
            with fs.open_input_file(inner) as f:
                yield Item(doc_id, f.read().decode("utf8"))
        except (OSError, UnicodeDecodeError) as err:
            yield Item(doc_id, error=f"unreadable file: {err}")
