"""A pipeline migrated from spacy-transformers: its alignment rule against the exact one.

    python benchmarks/interop/migrate_alignment.py --steps 100   # ~5 min on 2 CPU threads
    python benchmarks/interop/migrate_alignment.py --table       # the recorded rows

1. ``spacy-trf migrate`` turns ../shared/compat/spacy-transformers-1.4.0-pipeline into two
   pipelines: with spacy-transformers' alignment (``compat``: the same tags as
   spacy-transformers, tests/test_interop_migrate.py) and with spacy-trf's exact one. On EWT dev
   sentences (spaCy's tokenization of the raw text): tokens whose pieces differ, tags that change,
   and UPOS accuracy against the gold tags.
2. The exact pipeline is fine-tuned for ``--steps`` batches of 32 EWT train sentences labelled by
   the compat pipeline itself (the behaviour to keep), then measured again.
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

MEASURE = "migrate: spacy-transformers pipeline, exact vs compat alignment (EWT dev)"


def measure(nlp: Any, compat_docs: list[Any], gold: list[Any]) -> dict[str, Any]:
    from spacy_trf.interop.migrate import tokens_with_other_pieces

    texts = [d.text for d in compat_docs]
    docs = list(nlp.pipe(texts))
    tokens = sum(len(d) for d in docs)
    same = sum(a.tag_ == b.tag_ for d, c in zip(docs, compat_docs, strict=True)
               for a, b in zip(d, c, strict=True))  # fmt: skip
    moved = sum(tokens_with_other_pieces(d, c) for d, c in zip(docs, compat_docs, strict=True))
    return {"tokens": tokens, "pieces_differ": moved, "same_tag_as_compat": round(same / tokens, 4),
            "dev_upos_acc": round(float(nlp.evaluate(gold)["tag_acc"]), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--compat", type=Path, default=ROOT.parent / "shared" / "compat")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="Print the recorded rows.")
    args = parser.parse_args()
    if args.table:
        import json

        print_table([r for r in json.loads(args.results.read_text()) if r["measure"] == MEASURE])
        return
    import spacy
    import torch
    from spacy.tokens import Doc
    from spacy.training import Example
    from thinc.api import Adam
    from transformers.utils import logging as hf_logging
    from worker import ewt_docs

    from spacy_trf.interop import migrate

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    command = "python benchmarks/interop/migrate_alignment.py " + " ".join(sys.argv[1:])
    source = args.compat / "spacy-transformers-1.4.0-pipeline"
    with tempfile.TemporaryDirectory() as tmp:
        compat = spacy.load(migrate(source, Path(tmp) / "compat").output)
        exact = spacy.load(migrate(source, Path(tmp) / "exact", exact_alignment=True).output)

    def upos_gold(split: str) -> list[Any]:
        out = []
        for d in ewt_docs(args.data, split, n_sents=1):
            words, spaces = [t.text for t in d], [bool(t.whitespace_) for t in d]
            ref = Doc(compat.vocab, words=words, spaces=spaces, tags=[t.pos_ for t in d])
            out.append(Example(compat.make_doc(d.text), ref))
        return out

    dev = upos_gold("dev")
    compat_dev = list(compat.pipe([eg.reference.text for eg in dev]))
    rows = [{"system": "compat (= spacy-transformers)", "steps": 0,
             **measure(compat, compat_dev, dev)},
            {"system": "exact", "steps": 0, **measure(exact, compat_dev, dev)}]  # fmt: skip
    print(rows, flush=True)
    train_texts = [eg.reference.text for eg in upos_gold("train")]
    labelled = [Example(exact.make_doc(d.text), d) for d in compat.pipe(train_texts)]
    optimizer = Adam(1e-3)
    rng = random.Random(0)
    for step in range(args.steps):
        losses = exact.update(rng.sample(labelled, 32), sgd=optimizer)
        if step % 50 == 0:
            print(f"step {step} {losses}", flush=True)
    rows.append({"system": "exact, fine-tuned on compat's tags", "steps": args.steps,
                 **measure(exact, compat_dev, dev)})  # fmt: skip
    common = {"measure": MEASURE, "device": f"{cpu_name()}, {os.cpu_count()} CPUs",
              "cpu_flags": cpu_flags(), "run": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "command": command}  # fmt: skip
    rows = [{**common, **r} for r in rows]
    merge_rows(args.results, rows, lambda r: (r["measure"], r.get("system")))
    print_table(rows)
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
