"""The output directory of an annotation run: one file per shard (written atomically),
per-shard error files, ``manifest.json`` naming every finished shard and its input range, and
``errors.jsonl`` at the end.

Formats: ``docbin`` (spaCy's DocBin; ``doc.user_data["id"]`` and ``["meta"]``; ``doc._.trf``
only with ``keep_trf``), ``jsonl`` (one record per line) or ``parquet`` (the same records;
``meta`` as a JSON string, ents and spans as ``{start_char, end_char, label}`` structs).
"""

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import srsly
from spacy.tokens import Doc, DocBin

from ..files import write_atomically

FORMATS = ("docbin", "jsonl", "parquet")
SUFFIX = {"docbin": ".spacy", "jsonl": ".jsonl", "parquet": ".parquet"}
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"


def shard_file(output: Path, name: str, fmt: str) -> Path:
    return output / f"{name}{SUFFIX[fmt]}"


def error_file(output: Path, name: str) -> Path:
    return output / "errors" / f"{name}.jsonl"


def write_docbin(path: Path, docs: list[tuple[str, Doc, Any]], keep_trf: bool) -> None:
    docbin = DocBin(store_user_data=True)
    for doc_id, doc, meta in docs:
        doc.user_data["id"] = doc_id
        doc.user_data["meta"] = meta
        if not keep_trf and Doc.has_extension("trf"):
            doc._.trf = None
        docbin.add(doc)
    write_atomically(path, lambda tmp: tmp.write_bytes(docbin.to_bytes()))


def write_records(
    path: Path, records: list[dict[str, Any]], fmt: str, keys: tuple[str, ...]
) -> None:
    """jsonl or parquet; ``keys`` are the pipeline's annotation keys (the Parquet schema is
    the same for every shard, empty ones too)."""
    if fmt == "jsonl":
        write_atomically(path, lambda tmp: srsly.write_jsonl(tmp, records))
        return
    table = pa.Table.from_pylist([_arrow_row(r) for r in records], schema=_schema(keys))
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))


def _arrow_row(record: dict[str, Any]) -> dict[str, Any]:
    row = dict(record, meta=json.dumps(record["meta"]))
    if "ents" in row:
        row["ents"] = _span_structs(row["ents"])
    if "spans" in row:
        row["spans"] = [(key, _span_structs(group)) for key, group in row["spans"].items()]
    if "cats" in row:
        row["cats"] = list(row["cats"].items())
    return row


def _span_structs(items: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"start_char": s, "end_char": e, "label": label} for s, e, label in items]


_SPAN = pa.struct([("start_char", pa.int64()), ("end_char", pa.int64()), ("label", pa.string())])
_TYPES = {
    "id": pa.string(),
    "text": pa.string(),
    "meta": pa.string(),
    "tokens": pa.list_(pa.string()),
    "tags": pa.list_(pa.string()),
    "pos": pa.list_(pa.string()),
    "morphs": pa.list_(pa.string()),
    "lemmas": pa.list_(pa.string()),
    "heads": pa.list_(pa.int64()),
    "deps": pa.list_(pa.string()),
    "ents": pa.list_(_SPAN),
    "spans": pa.map_(pa.string(), pa.list_(_SPAN)),
    "cats": pa.map_(pa.string(), pa.float64()),
}


def _schema(keys: tuple[str, ...]) -> pa.Schema:
    return pa.schema([(k, _TYPES[k]) for k in ("id", "text", "meta", "tokens", *keys)])


def write_errors(path: Path, errors: list[dict[str, Any]]) -> None:
    path.parent.mkdir(exist_ok=True)
    write_atomically(path, lambda tmp: srsly.write_jsonl(tmp, errors))


def read_manifest(output: Path) -> dict[str, Any] | None:
    path = output / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    write_atomically(
        output / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    )


def merge_errors(output: Path, names: list[str]) -> int:
    """Concatenate the shards' error files, in shard order, into errors.jsonl."""
    errors = []
    for name in names:
        path = error_file(output, name)
        if path.is_file():
            errors.extend(srsly.read_jsonl(path))
    write_atomically(output / ERRORS, lambda tmp: srsly.write_jsonl(tmp, errors))
    return len(errors)


def remove_temporary_files(output: Path) -> None:
    """Temporary files a killed run left behind (finished files are never temporary)."""
    for folder in (output, output / "errors"):
        if folder.is_dir():
            for path in folder.glob(".part-*"):
                path.unlink(missing_ok=True)
