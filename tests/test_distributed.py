"""Corpus annotation on Ray (spacy_trf.distributed): equal to nlp.pipe, failing documents in
errors.jsonl, every document exactly once after a killed run is resumed, an existing cluster
through --address. Real local Ray clusters, started by the tests."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example

ray = pytest.importorskip("ray")

from spacy_trf.distributed import annotate  # noqa: E402
from spacy_trf.distributed.records import doc_record, record_keys  # noqa: E402

BIN = Path(sys.executable).parent
CODE = """
import spacy
from spacy.language import Language

@Language.component("fail_on_marker")
def fail_on_marker(doc):
    if "FAIL" in doc.text:
        raise ValueError("this document asked to fail")
    return doc
"""
TEXTS = [
    f"Sentence {i} about Oslo and Karin Holm, who works at Nordlys Energy in Norway."
    + " More words follow here." * (i % 4)
    for i in range(60)
]


@pytest.fixture(scope="module")
def pipeline(model_dirs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trf (tiny RoBERTa) + tagger + ner + textcat, initialized, then a component that fails on
    documents containing FAIL (registered in code.py, which the workers import too)."""
    root = tmp_path_factory.mktemp("ray")
    (root / "code.py").write_text(CODE)
    spacy.util.import_file("spacy_trf_test_code", root / "code.py")
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "trf", config={"model": {"name": model_dirs["roberta"], "window": 16, "stride": 12}}
    )
    listener = {
        "@architectures": "spacy-trf.TransformerListener.v1",
        "pooling": {"@layers": "reduce_mean.v1"},
    }
    nlp.add_pipe(
        "tagger", config={"model": {"@architectures": "spacy.Tagger.v2", "tok2vec": listener}}
    )
    nlp.add_pipe(
        "ner",
        config={
            "model": {
                "@architectures": "spacy.TransitionBasedParser.v2",
                "state_type": "ner",
                "hidden_width": 16,
                "maxout_pieces": 2,
                "use_upper": True,
                "tok2vec": listener,
            }
        },
    )  # noqa: E501
    nlp.add_pipe("textcat")
    nlp.add_pipe("fail_on_marker")
    doc = nlp.make_doc("Karin Holm visits Oslo .")
    annotations = {
        "tags": ["N", "N", "V", "N", "P"],
        "entities": [(0, 10, "PER"), (18, 22, "LOC")],
        "cats": {"A": 1.0, "B": 0.0},
    }
    nlp.initialize(lambda: [Example.from_dict(doc, annotations)])
    nlp.to_disk(root / "pipeline")
    return root / "pipeline"


def code(pipeline: Path) -> Path:
    return pipeline.parent / "code.py"


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def cli(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen(
        [str(BIN / "spacy-trf"), "annotate", *args], env=env, start_new_session=True, **kwargs
    )


def test_address_reaches_a_cluster_started_with_ray_start(pipeline: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port
        probe.bind(("", 0))
        port = str(probe.getsockname()[1])
    # Ray's token authentication: explicit addresses need the mode set (the token is the one
    # `ray start` wrote to ~/.ray/auth_token).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "token"}
    # On a machine that never ran Ray, `ray start` in token mode finds no token: make one first.
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True)
    start = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=1",
             "--node-ip-address=127.0.0.1"]  # fmt: skip
    for _ in range(2):  # on a loaded machine `ray start` can miss its own startup timeout
        started = subprocess.run(
            [*start, "--include-dashboard=false"], env=env, capture_output=True, text=True
        )
        if started.returncode == 0:
            break
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    host = re.search(r"ray start --address='([^']+)'", started.stdout + started.stderr)
    assert host is not None, started.stdout
    try:
        source = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in TEXTS[:8]])
        args = [str(pipeline), str(source), str(tmp_path / "out"), "--address", host.group(1)]
        run = cli(*args, "--format", "jsonl", "--code", str(code(pipeline)), env=env)
        assert run.wait(timeout=240) == 0
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)
    records = [json.loads(line) for line in (tmp_path / "out" / "part-00000.jsonl").open()]
    assert [r["text"] for r in records] == TEXTS[:8]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def expected_records(pipeline: Path, items: list[tuple[str, str, Any]]) -> list[dict]:
    nlp = spacy.load(pipeline)
    keys = record_keys(nlp)
    docs = nlp.pipe([text for _, text, _ in items])
    return [doc_record(i, doc, meta, keys) for (i, _, meta), doc in zip(items, docs, strict=True)]


def read_records(output: Path) -> list[dict]:
    return [
        json.loads(line) for path in sorted(output.glob("part-*.jsonl")) for line in path.open()
    ]


def test_records_equal_nlp_pipe_and_failures_go_to_errors(
    cluster: None, pipeline: Path, tmp_path: Path
) -> None:
    lines = []
    for i, text in enumerate(TEXTS):
        lines.append(
            json.dumps({"text": text, "meta": {"n": i}} if i % 2 else {"id": f"d{i}", "text": text})
        )
    lines[10:10] = [
        "{not json",
        "",
        json.dumps({"text": "Please FAIL here."}),
        json.dumps({"txt": "x"}),
    ]
    lines.append(json.dumps({"text": "a" * 1_000_001}))
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    result = annotate(pipeline, source, tmp_path / "out", workers=2, fmt="jsonl", shard_mb=0.002,
                      code=code(pipeline), progress=False)  # fmt: skip
    assert result.shards > 2 and result.docs == len(TEXTS) and result.errors == 4
    items = [(f"d{i}" if i % 2 == 0 else f"in.jsonl:{i + 1 + (4 if i >= 10 else 0)}", t,
              None if i % 2 == 0 else {"n": i}) for i, t in enumerate(TEXTS)]  # fmt: skip
    got = read_records(tmp_path / "out")
    assert [r["id"] for r in got] == [i for i, _, _ in items]
    for a, b in zip(got, expected_records(pipeline, items), strict=True):
        assert a.keys() == b.keys() == {"id", "text", "meta", "tokens", "tags", "ents", "cats"}
        assert (a["tokens"], a["tags"], a["ents"]) == (b["tokens"], b["tags"], b["ents"])
        np.testing.assert_allclose(list(a["cats"].values()), list(b["cats"].values()), atol=1e-4)
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").open()]
    assert [e["id"] for e in errors] == [
        "in.jsonl:11",
        "in.jsonl:13",
        "in.jsonl:14",
        f"in.jsonl:{len(lines)}",
    ]
    assert "ValueError" in errors[1]["error"] and "max_length" in errors[3]["error"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["shards"]) == result.shards
    with pytest.raises(ValueError, match="--resume"):
        annotate(pipeline, source, tmp_path / "out", fmt="jsonl", progress=False)
    with pytest.raises(ValueError, match="another format"):
        annotate(pipeline, source, tmp_path / "out", fmt="parquet", resume=True, progress=False)
    with pytest.raises(ValueError, match="another shard_mb"):
        annotate(pipeline, source, tmp_path / "out", fmt="jsonl", shard_mb=0.004, resume=True)


def test_docbin_shards_keep_hidden_states_on_request(
    cluster: None, pipeline: Path, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in TEXTS[:12]])
    annotate(
        pipeline, source, tmp_path / "keep", keep_trf=True, code=code(pipeline), progress=False
    )
    annotate(pipeline, source, tmp_path / "drop", code=code(pipeline), progress=False)
    nlp = spacy.load(pipeline)
    expected = list(nlp.pipe(TEXTS[:12]))
    kept = list(DocBin().from_disk(tmp_path / "keep" / "part-00000.spacy").get_docs(nlp.vocab))
    dropped = list(DocBin().from_disk(tmp_path / "drop" / "part-00000.spacy").get_docs(nlp.vocab))
    assert [d.user_data["id"] for d in kept] == [f"in.jsonl:{i + 1}" for i in range(12)]
    for doc, want, other in zip(kept, expected, dropped, strict=True):
        assert [t.tag_ for t in doc] == [t.tag_ for t in want]
        np.testing.assert_allclose(
            doc._.trf.last_hidden_state, want._.trf.last_hidden_state, atol=1e-4
        )
        assert other._.trf is None


def test_txt_folder_to_parquet(cluster: None, pipeline: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    for i, text in enumerate(TEXTS[:5]):
        (folder / ("sub" if i % 2 else "") / f"t{i}.txt").write_text(text)
    annotate(pipeline, folder, tmp_path / "out", fmt="parquet", code=code(pipeline), progress=False)
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet").to_pylist()
    assert sorted(r["id"] for r in table) == sorted(
        ["t0.txt", "sub/t1.txt", "t2.txt", "sub/t3.txt", "t4.txt"]
    )
    # maps read back as (key, value) pairs
    assert all(isinstance(r["ents"], list) and set(dict(r["cats"])) == {"A", "B"} for r in table)


def test_a_killed_run_resumes_with_every_document_once(
    cluster: None, pipeline: Path, tmp_path: Path
) -> None:
    texts = [f"{t} Number {i}." for i, t in enumerate(TEXTS * 6)]
    source = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in texts])
    out = tmp_path / "out"
    args = [str(pipeline), str(source), str(out), "--format", "jsonl", "--shard-mb", "0.002"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    run = cli(*args, "--code", str(code(pipeline)), **quiet)
    deadline = time.time() + 240
    while time.time() < deadline:
        manifest = (
            json.loads((out / "manifest.json").read_text())
            if (out / "manifest.json").exists()
            else {}
        )
        if len(manifest.get("shards", {})) >= 2:
            break
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)  # the driver and its local cluster, mid-run
    run.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"].pop("part-00000", None)  # redone: an earlier attempt's errors must go
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "errors").mkdir(exist_ok=True)
    (out / "errors" / "part-00000.jsonl").write_text('{"id": "stale", "error": "old"}\n')
    finished = len(manifest["shards"])
    result = annotate(pipeline, source, out, fmt="jsonl", shard_mb=0.002, resume=True,
                      code=code(pipeline), progress=False)  # fmt: skip
    assert 1 <= result.skipped == finished < result.shards and result.errors == 0
    ids = [r["id"] for r in read_records(out)]
    assert ids == [f"in.jsonl:{i + 1}" for i in range(len(texts))]
    assert not list(out.glob(".*"))  # no temporary files left


def test_bad_arguments_fail_before_anything_is_written(pipeline: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"text": "One."})])
    with pytest.raises(FileNotFoundError, match="saved pipeline"):
        annotate(tmp_path / "nope", source, tmp_path / "out1")
    with pytest.raises(FileNotFoundError, match="No input"):
        annotate(pipeline, tmp_path / "missing.jsonl", tmp_path / "out2")
    (tmp_path / "in.csv").write_text("text\nOne.\n")
    with pytest.raises(ValueError, match="Unsupported input"):
        annotate(pipeline, tmp_path / "in.csv", tmp_path / "out3")
    with pytest.raises(ValueError, match="format"):
        annotate(pipeline, source, tmp_path / "out4", fmt="csv")
    assert not any((tmp_path / f"out{i}").exists() for i in range(1, 5))
