"""Soak, shortened (benchmarks/reliability/soak.py runs 101,000 docs): thousands of docs through
one trf + tagger pipeline leave live memory flat and every cache within its bound."""

import ctypes
import ctypes.util
import gc
import os
import platform
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import spacy
from spacy.training import Example

from spacy_trf.encoder import backends

N_DOCS = 3000
LONG_EVERY = 100  # one 400-word doc (several windows) after every 100 short ones
CACHE_MB = 4.0
LISTENER = {
    "@architectures": "spacy-trf.TransformerListener.v1",
    "pooling": {"@layers": "reduce_mean.v1"},
}
TAGGER = {"@architectures": "spacy.Tagger.v2", "tok2vec": LISTENER}


def live_rss_mb() -> float:
    """Resident memory once freed memory is handed back to the OS: what is really in use (the
    allocator's own retention, which the benchmark measures, does not count here)."""
    gc.collect()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc_trim(0)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def texts(n: int) -> Iterator[str]:
    rng = random.Random(0)
    words = "the a cat dog ran sat on under city river bank old new fast slowly and".split()
    sents = [" ".join(rng.choices(words, k=rng.randint(3, 40))) for _ in range(300)]
    for i in range(n):
        yield sents[i % len(sents)]
        if i % LONG_EVERY == LONG_EVERY - 1:
            yield " ".join(rng.choices(words, k=400))


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not Path("/proc/self/statm").exists(),
    reason="needs Linux with glibc (malloc_trim)",
)
def test_thousands_of_docs_leave_memory_and_caches_flat(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[int] = []
    quantize = backends.quantize_int8
    monkeypatch.setattr(backends, "quantize_int8", lambda m: builds.append(1) or quantize(m))
    nlp = spacy.blank("en")
    trf_config = {"inference": "int8", "frozen": True, "feature_cache_mb": CACHE_MB}
    nlp.add_pipe("trf", config={"model": {"name": model_dirs["bert"]}, **trf_config})
    nlp.add_pipe("tagger", config={"model": TAGGER})
    egs = [Example.from_dict(nlp.make_doc("the cat ran"), {"tags": ["DT", "NN", "VB"]})]
    nlp.initialize(lambda: egs)
    trf = nlp.get_pipe("trf")
    n_total = N_DOCS + N_DOCS // LONG_EVERY
    at_tenth, done = None, 0
    for doc in nlp.pipe(texts(N_DOCS), batch_size=64):
        done += 1
        assert all(t.tag_ for t in doc)
        assert trf.cache.nbytes <= trf.cache.max_bytes
        if done == n_total // 10:
            at_tenth = live_rss_mb()
    assert done == n_total  # no doc lost
    assert at_tenth is not None
    growth = (live_rss_mb() - at_tenth) / at_tenth
    assert growth < 0.05, f"live memory grew {100 * growth:.1f}% after the first 10%"
    assert builds == [1]  # the int8 copy was built once
    assert 0 < trf.cache.nbytes <= CACHE_MB * 2**20 and len(trf.cache) < trf.cache.misses  # evicted


def test_memory_zones_free_each_requests_strings(model_dirs: dict[str, str]) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"model": {"name": model_dirs["roberta"]}})
    nlp.add_pipe("tagger", config={"model": TAGGER})
    egs = [Example.from_dict(nlp.make_doc("the cat ran"), {"tags": ["DT", "NN", "VB"]})]
    nlp.initialize(lambda: egs)
    nlp("the cat ran")
    before = len(nlp.vocab.strings)
    for i in range(3):
        with nlp.memory_zone():
            doc = nlp(f"zebra{i} quokka{i} ran")
            assert doc._.trf is not None and doc.has_annotation("TAG")
    assert len(nlp.vocab.strings) == before
    assert nlp("the cat ran").has_annotation("TAG")
