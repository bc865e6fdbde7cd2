"""``annotate``: a saved pipeline over a corpus on Ray Data, resumable shard by shard.

Shards (inputs.py) -> ``ray.data.from_items`` -> ``map_batches`` with ``Annotator``, an actor
that loads the pipeline once from its directory and annotates one shard per call, writing the
shard's output file atomically -> the driver records each finished shard in ``manifest.json``.
A run stopped at any point is completed by running it again with ``resume=True``: finished
shards are skipped, the others are written again, whole.
"""

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import spacy
import torch
from ray.data import DataContext
from tqdm import tqdm

from .cluster import connect
from .inputs import Item, Shard, count_newlines, fingerprint, plan_shards, read_shard
from .output import (
    FORMATS,
    error_file,
    merge_errors,
    read_manifest,
    remove_temporary_files,
    shard_file,
    write_docbin,
    write_errors,
    write_manifest,
    write_records,
)
from .records import doc_record, record_keys

RETRIES = 3  # restarts of a dead actor, and retries of its shard


@dataclass
class AnnotateResult:
    """What a run wrote: documents, errors and shards (those skipped as already finished)."""

    docs: int
    errors: int
    shards: int
    skipped: int
    output: Path


class Annotator:
    """A Ray Data actor: the pipeline loaded once, then one shard per call."""

    def __init__(
        self,
        pipeline: str,
        output: str,
        fmt: str,
        keep_trf: bool,
        batch_size: int,
        threads: int,
        code: str | None,
    ) -> None:
        torch.set_num_threads(threads)
        if code:  # the user's registered functions, as spaCy's --code loads them
            spacy.util.import_file("spacy_trf_user_code", code)
        self.nlp = spacy.load(pipeline)
        self.keys = record_keys(self.nlp)
        self.output, self.fmt, self.keep_trf = Path(output), fmt, keep_trf
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        summary: dict[str, list[Any]] = {"shard": [], "docs": [], "words": [], "errors": []}
        for text in batch["shard"]:
            shard = Shard.from_json(str(text))
            docs, errors = self.annotate(read_shard(shard))
            self.write(shard, docs, errors)
            summary["shard"].append(shard.index)
            summary["docs"].append(len(docs))
            summary["words"].append(sum(len(doc) for _, doc, _ in docs))
            summary["errors"].append(len(errors))
        return summary

    def annotate(self, items: Iterable[Item]) -> tuple[list[tuple[str, Any, Any]], list[dict]]:
        docs: list[tuple[str, Any, Any]] = []
        errors: list[dict] = []
        good: list[Item] = []
        for position, item in enumerate(items):
            item.position = position
            if item.error is None and len(item.text) > self.nlp.max_length:
                item.error = (
                    f"text of {len(item.text)} characters is over nlp.max_length "
                    f"({self.nlp.max_length}): raise it when loading the pipeline or split the text"
                )
            if item.error is not None:
                errors.append({"id": item.id, "error": item.error, "_at": position})
            else:
                good.append(item)
        for start in range(0, len(good), self.batch_size):
            docs.extend(self._annotate_batch(good[start : start + self.batch_size], errors))
        errors.sort(key=lambda e: e.pop("_at"))  # in input order
        return docs, errors

    def _annotate_batch(self, items: list[Item], errors: list[dict]) -> Iterator[tuple]:
        try:
            annotated = list(self.nlp.pipe([item.text for item in items]))
        except Exception:  # find the failing documents one by one
            for item in items:
                try:
                    yield item.id, self.nlp(item.text), item.meta
                except Exception as err:
                    error = f"{type(err).__name__}: {err}"
                    errors.append({"id": item.id, "error": error, "_at": item.position})
            return
        yield from ((item.id, doc, item.meta) for item, doc in zip(items, annotated, strict=True))

    def write(self, shard: Shard, docs: list[tuple[str, Any, Any]], errors: list[dict]) -> None:
        # Always written (empty too): a rerun replaces what an earlier attempt found.
        write_errors(error_file(self.output, shard.name), errors)
        path = shard_file(self.output, shard.name, self.fmt)
        if self.fmt == "docbin":
            write_docbin(path, docs, self.keep_trf)
        else:
            records = [doc_record(i, doc, meta, self.keys) for i, doc, meta in docs]
            write_records(path, records, self.fmt, self.keys)


def annotate(
    pipeline: str | Path,
    input: str | Path,
    output: str | Path,
    *,
    workers: int = 1,
    threads_per_worker: int = 1,
    batch_size: int = 64,
    gpus_per_worker: float = 0,
    address: str | None = None,
    fmt: str = "docbin",
    keep_trf: bool = False,
    resume: bool = False,
    shard_mb: float = 8.0,
    code: str | Path | None = None,
    progress: bool = True,
) -> AnnotateResult:
    """Annotate ``input`` with the saved pipeline ``pipeline`` into the directory ``output``.

    workers (int): Ray actors, each with its own copy of the pipeline.
    threads_per_worker (int): torch threads (and Ray CPUs) per actor.
    batch_size (int): documents per ``nlp.pipe`` batch.
    gpus_per_worker (float): GPUs per actor (0: CPU).
    address (str | None): An existing Ray cluster ("auto", "ray://host:10001", ...); default: a
        local one with workers x threads_per_worker CPUs.
    fmt (str): "docbin", "jsonl" or "parquet".
    resume (bool): Skip the shards a stopped run finished (same input, pipeline and format).
    shard_mb (float): Input bytes per shard (jsonl, parquet); a folder of .txt files goes 256
        files per shard.
    code (str | Path | None): A Python file with the pipeline's custom registered functions,
        imported on every worker (spaCy's --code).
    """
    output = Path(output)
    _check_args(str(pipeline), fmt, workers, threads_per_worker, batch_size, shard_mb,
                gpus_per_worker, code)  # fmt: skip
    pipeline = str(Path(pipeline).resolve()) if Path(pipeline).exists() else str(pipeline)
    source = fingerprint(str(input))
    settings = {
        "input": source,
        "pipeline": pipeline,
        "pipeline_files": _pipeline_fingerprint(pipeline),
        "format": fmt,
        "keep_trf": keep_trf,
        "shard_mb": shard_mb,
    }
    # before anything is written
    planned = plan_shards(str(input), shard_mb, listing=source)
    manifest = _start_manifest(output, settings, resume)
    started = connect(address, workers * threads_per_worker, workers * gpus_per_worker)
    DataContext.get_current().enable_progress_bars = False
    try:
        shards = _numbered(planned)
        done = manifest["shards"]
        for shard in shards:
            recorded = done.get(shard.name, {}).get("input")
            if recorded is not None and recorded != _input_range(shard):
                raise ValueError(
                    f"Cannot resume into '{output}': shard {shard.name} covered another input "
                    "range in the stopped run. Use the same --shard-mb, or a new directory."
                )
        pending = [s for s in shards if s.name not in done]
        remove_temporary_files(output)
        actor = {
            "pipeline": pipeline,
            "output": str(output.resolve()),
            "fmt": fmt,
            "keep_trf": keep_trf,
            "batch_size": batch_size,
            "threads": threads_per_worker,
            "code": str(Path(code).resolve()) if code else None,
        }
        _run(pending, manifest, output, actor, workers, gpus_per_worker, progress)
    finally:
        if started:
            ray.shutdown()
    names = [s.name for s in shards]
    n_errors = merge_errors(output, names)
    n_docs = sum(manifest["shards"][n]["docs"] for n in names)
    return AnnotateResult(n_docs, n_errors, len(shards), len(shards) - len(pending), output)


def _pipeline_fingerprint(pipeline: str) -> list[list[Any]]:
    """Sizes and modification times of the pipeline's config and meta (a pipeline retrained in
    place is another pipeline)."""
    files = [Path(pipeline) / name for name in ("config.cfg", "meta.json")]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def _check_args(
    pipeline: str,
    fmt: str,
    workers: int,
    threads: int,
    batch_size: int,
    shard_mb: float,
    gpus: float,
    code: str | Path | None,
) -> None:
    if not isinstance(shard_mb, int | float) or shard_mb <= 0:
        raise ValueError(f"shard size must be a positive number of MB, got {shard_mb!r}.")
    if not isinstance(gpus, int | float) or gpus < 0:
        raise ValueError(f"GPUs per worker must be a number >= 0, got {gpus!r}.")
    if code is not None and not Path(code).is_file():
        raise FileNotFoundError(f"No Python file at '{code}' (--code).")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}.")
    for name, value in (("workers", workers), ("threads per worker", threads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}.")
    if not (Path(pipeline) / "config.cfg").is_file() and not spacy.util.is_package(pipeline):
        raise FileNotFoundError(
            f"No saved pipeline at '{pipeline}': give a directory written by nlp.to_disk() (or "
            "an installed pipeline package), readable at the same path on every Ray node."
        )


def _start_manifest(output: Path, settings: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The manifest to continue (resume) or a new one; refuses to mix runs."""
    previous = read_manifest(output) if output.exists() else None
    if resume and previous is not None:
        changed = [k for k, v in settings.items() if previous.get(k) != v]
        if changed:
            raise ValueError(
                f"Cannot resume into '{output}': its run had another {', '.join(changed)}. Use "
                "the same input, pipeline and format, or a new output directory."
            )
        return previous
    if output.exists() and any(output.iterdir()):
        hint = " (no manifest.json to resume from)" if resume else "; add --resume to continue it"
        raise ValueError(f"'{output}' exists and is not empty{hint}: choose a new directory.")
    output.mkdir(parents=True, exist_ok=True)
    manifest = {**settings, "shards": {}}
    write_manifest(output, manifest)
    return manifest


def _numbered(shards: list[Shard]) -> list[Shard]:
    """jsonl shards with the newlines before each (counted by Ray tasks), for line ids."""
    if not shards or shards[0].kind != "jsonl":
        return shards

    def count(row: dict[str, Any]) -> dict[str, Any]:
        shard = Shard.from_json(row["shard"])
        return {"index": shard.index, "n": count_newlines(shard)}

    rows = ray.data.from_items([{"shard": s.to_json()} for s in shards]).map(count).iter_rows()
    counts = dict(sorted((int(r["index"]), int(r["n"])) for r in rows))
    before = np.concatenate([[0], np.cumsum(list(counts.values()))[:-1]]).astype(int)
    return [
        replace(s, newlines_before=int(b), n_docs=counts[s.index])
        for s, b in zip(shards, before, strict=True)
    ]


def _run(
    pending: list[Shard],
    manifest: dict[str, Any],
    output: Path,
    actor: dict[str, Any],
    workers: int,
    gpus: float,
    progress: bool,
) -> None:
    """Annotate the pending shards; record each in the manifest as soon as it is written."""
    if not pending:
        return
    by_index = {s.index: s for s in pending}
    items = [{"shard": s.to_json()} for s in pending]
    # One block per shard, so that each is recorded as soon as it is written.
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        Annotator,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(pending))),
        num_cpus=actor["threads"],
        num_gpus=gpus or None,
        fn_constructor_kwargs=actor,
        # A dead actor is replaced and its shard run again, a few times: a document that
        # kills its process must not loop forever.
        max_restarts=RETRIES,
        max_task_retries=RETRIES,
    )
    bar = tqdm(total=sum(s.n_docs for s in pending), unit="doc", disable=not progress)
    try:
        _record(dataset, manifest, output, by_index, bar)
    except ray.exceptions.RayError as err:
        raise RuntimeError(
            f"A Ray worker failed ({type(err).__name__}): {err}\nThe shards finished so far are "
            "in manifest.json: run the same command with --resume to continue."
        ) from err
    finally:
        bar.close()


def _record(
    dataset: Any, manifest: dict[str, Any], output: Path, by_index: dict[int, Shard], bar: Any
) -> None:
    """Record each finished shard in the manifest as its summary row arrives."""
    words, start = 0, time.perf_counter()
    for row in dataset.iter_rows():
        shard = by_index[int(row["shard"])]
        manifest["shards"][shard.name] = {
            "input": _input_range(shard),
            "docs": int(row["docs"]),
            "errors": int(row["errors"]),
        }
        write_manifest(output, manifest)
        words += int(row["words"])
        bar.update(shard.n_docs)
        bar.set_postfix(words_per_s=f"{words / max(time.perf_counter() - start, 1e-9):,.0f}")


def _input_range(shard: Shard) -> dict[str, Any]:
    return {"files": list(shard.files), "start": shard.start, "end": shard.end}
