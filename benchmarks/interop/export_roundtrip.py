"""export-hf round trip: train in spaCy, export, predict with transformers' pipelines, compare.

    python benchmarks/interop/export_roundtrip.py --steps 300   # ~15 min on 2 CPU threads

1. Tagger: trf (the shipped MiniLM) + spaCy's tagger on a TransformerListener (reduce_first,
   last layer), `--steps` batches of 32 EWT train sentences (nlp.update, Adam 1e-4 for the
   encoder through learn_rate_scale, 1e-3 for the head); exported with export_hf; on EWT dev
   every spaCy token's tag against that of its first piece from
   `pipeline("token-classification")` (aggregation "none").
2. Text classifier: trf + textcat (TransformerTextCat.v1, pooling "cls") on emotion train for
   `--steps` batches of 32; on emotion validation the top category of `doc.cats` against that of
   `pipeline("text-classification", top_k=None)`, and the largest score difference.
"""

import argparse
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from hf_heads import RESULTS, print_table  # noqa: E402
from offline import ROOT  # noqa: E402 (sets up the environment and paths)
from record import cpu_flags, cpu_name, merge_rows  # noqa: E402

LISTENER = {"@architectures": "spacy-trf.TransformerListener.v1",
            "pooling": {"@layers": "reduce_first.v1"}}  # fmt: skip


def train(nlp: Any, examples: list[Any], steps: int) -> None:
    from thinc.api import Adam

    nlp.initialize(lambda: examples)  # every label
    optimizer = Adam(1e-3)
    rng = random.Random(0)
    for step in range(steps):
        losses = nlp.update(rng.sample(examples, 32), sgd=optimizer)
        if step % 100 == 0:
            print(f"step {step} {losses}", flush=True)


def new_nlp() -> Any:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"learn_rate_scale": 0.1})
    return nlp


def tagger_roundtrip(data: Path, work: Path, steps: int) -> dict[str, Any]:
    from spacy.tokens import Doc
    from spacy.training import Example
    from transformers import pipeline
    from worker import ewt_docs

    from spacy_trf.interop import export_hf

    nlp = new_nlp()
    model = {"@architectures": "spacy.Tagger.v2", "tok2vec": LISTENER}
    nlp.add_pipe("tagger", config={"model": model})

    def examples(split: str) -> list[Any]:
        return [
            Example(nlp.make_doc(d.text), Doc(nlp.vocab).from_bytes(d.to_bytes()))
            for d in ewt_docs(data, split, n_sents=1)
        ]

    train_examples = examples("train")
    train(nlp, train_examples, steps)
    dev_texts = [eg.reference.text for eg in examples("dev")]
    report = export_hf(nlp, work / "tagger-hf", "tagger")
    hf = pipeline("token-classification", model=str(work / "tagger-hf"))
    same = total = 0
    for doc, pieces in zip(nlp.pipe(dev_texts), hf(dev_texts, batch_size=32), strict=True):
        for t in doc:
            start, end = t.idx, t.idx + len(t)
            first = next(
                (p for p in pieces if p["end"] > start and p["start"] < end
                 and doc.text[p["start"] : p["end"]].strip()), None,
            )  # fmt: skip
            total += 1
            same += int(first is not None and first["entity"] == t.tag_)
    return {"measure": "export-hf tagger round trip (EWT dev)", "steps": steps,
            "exact": report.exact, "tokens": total,
            "same_tag": same, "same_share": round(same / total, 5),
            "dev_tag_acc": round(float(nlp.evaluate(examples("dev"))["tag_acc"]), 4)}  # fmt: skip


def textcat_roundtrip(data: Path, work: Path, steps: int) -> dict[str, Any]:
    from spacy.training import Example
    from transformers import pipeline

    from spacy_trf.interop import export_hf

    def read(split: str) -> list[tuple[str, str]]:
        lines = (data / "emotion" / f"{split}.txt").read_text(encoding="utf8").splitlines()
        return [tuple(ln.rsplit(";", 1)) for ln in lines if ln.strip()]  # type: ignore[misc]

    train_rows, dev_rows = read("train"), read("validation")
    labels = sorted({label for _, label in train_rows})
    nlp = new_nlp()
    model = {"@architectures": "spacy-trf.TransformerTextCat.v1", "exclusive_classes": True,
             "pooling": "cls", "tok2vec": {"@architectures":
                                           "spacy-trf.TransformerOutputListener.v1"}}  # fmt: skip
    nlp.add_pipe("textcat", config={"model": model})
    examples = [
        Example.from_dict(nlp.make_doc(text), {"cats": {c: float(c == y) for c in labels}})
        for text, y in train_rows
    ]
    train(nlp, examples, steps)
    texts = [text for text, _ in dev_rows]
    export_hf(nlp, work / "textcat-hf", "textcat")
    clf = pipeline("text-classification", model=str(work / "textcat-hf"), top_k=None)
    same, worst, correct = 0, 0.0, 0
    for doc, scores, (_, gold) in zip(nlp.pipe(texts), clf(texts, batch_size=32), dev_rows,
                                      strict=True):  # fmt: skip
        top = max(doc.cats, key=doc.cats.get)
        same += int(top == scores[0]["label"])
        correct += int(top == gold)
        worst = max(worst, max(abs(doc.cats[s["label"]] - s["score"]) for s in scores))
    return {"measure": "export-hf textcat round trip (emotion validation)", "steps": steps,
            "texts": len(texts), "same_top": same,
            "same_share": round(same / len(texts), 5), "max_abs_diff": worst,
            "dev_accuracy": round(correct / len(texts), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    command = "python benchmarks/interop/export_roundtrip.py " + " ".join(sys.argv[1:])
    common = {"device": f"{cpu_name()}, {os.cpu_count()} CPUs", "cpu_flags": cpu_flags(),
              "run": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            {**tagger_roundtrip(args.data, Path(tmp), args.steps), **common},
            {**textcat_roundtrip(args.data, Path(tmp), args.steps), **common},
        ]
    merge_rows(args.results, rows, lambda r: (r["measure"], r.get("system")))
    print_table(rows)
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
