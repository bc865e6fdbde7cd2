"""Threads sharing one loaded pipeline, as a threaded web server does: with every inference
backend they get the serial run's outputs, the converted copy is built once, nothing crashes
or deadlocks. A failing batch loses only its failing docs to spaCy's error handler.

n_process=2: tests/test_encoder_fork.py (same outputs, every doc, in order).
"""

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example

from spacy_trf.encoder import backends

from .conftest import make_nlp
from .marks import needs_bf16, needs_onnx

N_THREADS = 4
TEXTS = [
    "The harbour town woke slowly.",
    "She paid $12.50 for two croissants, a crème brûlée and a coffee. " * 9,  # several windows
    "",
    "Dogs bark .",
    "Москва and 北京市 are far apart 🙂",
    "A cat sat on the mat while the dog slept by the door.",
    "Short.",
    "Rain fell on the quiet streets of the old city all night long.",
]
TAGGED = [("Dogs bark loudly .", ["N", "V", "A", "P"]), ("Cats sleep .", ["N", "V", "P"])]
BUILDERS = {"int8": "quantize_int8", "compile": "compile_model", "onnx": "export_onnx"}
BACKENDS = [
    "torch",
    pytest.param("bf16", marks=needs_bf16),
    "int8",
    "compile",
    pytest.param("onnx", marks=needs_onnx),
]


@pytest.fixture(scope="module")
def tagger_pipeline(model_dirs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny RoBERTa trf + tagger pipeline."""
    nlp = make_nlp(model_dirs["roberta"])
    listener = {
        "@architectures": "spacy-trf.TransformerListener.v1",
        "pooling": {"@layers": "reduce_mean.v1"},
    }
    nlp.add_pipe("tagger", config={"model": {"tok2vec": listener}})
    egs = [Example.from_dict(nlp.make_doc(t), {"tags": tags}) for t, tags in TAGGED]
    nlp.initialize(lambda: egs)
    path = tmp_path_factory.mktemp("threads") / "pipeline"
    nlp.to_disk(path)
    return path


def result(doc: Doc) -> tuple[list[str], np.ndarray]:
    return [t.tag_ for t in doc], doc._.trf.last_hidden_state


def workload(nlp: spacy.Language) -> list[tuple[list[str], np.ndarray]]:
    """What each thread does: a batched nlp.pipe and single nlp(text) calls."""
    return [result(d) for d in nlp.pipe(TEXTS, batch_size=3)] + [result(nlp(t)) for t in TEXTS]


def run_threads(nlp: spacy.Language, timeout: float) -> list[Any]:
    """Each thread's workload results (or the exception it raised), started at once."""
    results: list[Any] = [None] * N_THREADS
    start = threading.Barrier(N_THREADS)

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = workload(nlp)
        except Exception as err:  # reported by the test, not lost in the thread
            results[i] = err

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(N_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), f"deadlock: threads alive after {timeout} s"
    return results


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.filterwarnings("ignore:inference = .bf16.")
def test_threads_share_one_pipeline(
    tagger_pipeline: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[str] = []
    if backend in BUILDERS:
        build = getattr(backends, BUILDERS[backend])

        def counted(*args: Any) -> Any:
            builds.append(backend)
            return build(*args)

        monkeypatch.setattr(backends, BUILDERS[backend], counted)
    if backend == "compile":
        torch._dynamo.reset()  # this test's threads compile their own graphs
    nlp = spacy.load(tagger_pipeline, config={"components": {"trf": {"inference": backend}}})
    threaded = run_threads(nlp, timeout=600)
    errors = [r for r in threaded if isinstance(r, Exception)]
    assert not errors, errors
    assert builds == ([backend] if backend in BUILDERS else [])
    serial = workload(nlp)
    for got in threaded:
        for (tags, rows), (want_tags, want_rows) in zip(got, serial, strict=True):
            assert tags == want_tags
            np.testing.assert_array_equal(rows, want_rows)


def test_error_handler_keeps_the_other_docs_of_a_failing_batch(
    tagger_pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nlp = spacy.load(tagger_pipeline)
    trf = nlp.get_pipe("trf")
    predict = trf.predict

    def fail_on_boom(docs: list[Doc]) -> Any:
        if any("BOOM" in doc.text for doc in docs):
            raise RuntimeError("boom")
        return predict(docs)

    monkeypatch.setattr(trf, "predict", fail_on_boom)
    texts = ["Dogs bark .", "Cats BOOM sleep .", "Birds sing .", "Fish swim .", "Cows moo ."]
    with pytest.raises(RuntimeError, match="boom"):  # spaCy's default handler raises
        list(nlp.pipe(texts, batch_size=4))
    failed: list[tuple[str, list[str], str]] = []
    nlp.set_error_handler(
        lambda name, _, docs, err: failed.append((name, [d.text for d in docs], str(err)))
    )
    docs = list(nlp.pipe(texts, batch_size=4))
    assert [d.text for d in docs] == [t for t in texts if "BOOM" not in t]
    assert all(d._.trf is not None and all(t.tag_ for t in d) for d in docs)
    assert failed == [("trf", ["Cats BOOM sleep ."], "boom")]
