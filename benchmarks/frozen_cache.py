"""Frozen encoder + feature cache: seconds per training epoch, epoch 1 (fills the cache) vs later
epochs (reuse it), for a tagger listening to a frozen all-MiniLM-L6-v2 on EWT train sentences.

    python benchmarks/frozen_cache.py [--sents 1000] [--epochs 3]
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import spacy  # noqa: E402
import torch  # noqa: E402
from spacy.training import Example  # noqa: E402
from spacy.training.converters import conllu_to_docs  # noqa: E402
from spacy.util import minibatch  # noqa: E402
from thinc.api import Adam  # noqa: E402

DATA = Path(__file__).parent.parent.parent / "shared" / "data" / "ud-en-ewt"


def build(cache_mb: int) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"frozen": True, "feature_cache_mb": cache_mb})
    listener = {
        "@architectures": "spacy-trf.TransformerListener.v1",
        "pooling": {"@layers": "reduce_mean.v1"},
    }
    nlp.add_pipe(
        "tagger", config={"model": {"@architectures": "spacy.Tagger.v2", "tok2vec": listener}}
    )
    return nlp


def run(cache_mb: int, examples: list[Example], epochs: int) -> list[float]:
    random.seed(0)
    nlp = build(cache_mb)
    nlp.initialize(lambda: examples)
    optimizer = Adam(1e-3)
    times = []
    for _ in range(epochs):
        random.shuffle(examples)
        start = time.perf_counter()
        for batch in minibatch(examples, 32):
            nlp.update(batch, sgd=optimizer)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sents", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    docs = conllu_to_docs((DATA / "en_ewt-ud-train.conllu").read_text(), n_sents=1, no_print=True)
    gold = [doc for _, doc in zip(range(args.sents), docs, strict=False)]
    vocab_nlp = spacy.blank("en")
    examples = [Example(vocab_nlp.make_doc(d.text), d) for d in gold]
    words = sum(len(d) for d in gold)
    rows = []
    for label, cache_mb in (("frozen, cache 2048 MB", 2048), ("frozen, no cache", 0)):
        times = run(cache_mb, list(examples), args.epochs)
        rows.append((label, times))
    print(f"\nTagger on {args.sents} EWT train sentences ({words} words), batch 32, 2 threads")
    header = " | ".join(f"epoch {i + 1} s" for i in range(args.epochs))
    print(f"| setting | {header} | epoch 1 / later epochs |")
    print("|---|" + "---:|" * (args.epochs + 1))
    for label, times in rows:
        later = sum(times[1:]) / max(1, len(times) - 1)
        cells = " | ".join(f"{t:.1f}" for t in times)
        print(f"| {label} | {cells} | {times[0] / later:.1f}x |")
    print(
        f"\ncommand: python benchmarks/frozen_cache.py --sents {args.sents} --epochs {args.epochs}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
