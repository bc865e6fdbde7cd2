"""``spacy-trf quickstart``: train, evaluate and use a tagger + ner + textcat pipeline.

By default on the shipped MiniLM encoder and a small sample we wrote for this package
(spacy_trf/data/quickstart); ``--train/--dev`` point it at real data instead.
"""

import shutil
from pathlib import Path
from typing import Any

import spacy
from spacy.cli.train import train
from wasabi import msg

from .data import infer_pipeline, read_docs, write_docbin
from .init_config import DEFAULT_MODEL, make_config, write_config

SAMPLE_DIR = Path(__file__).parent.parent / "data" / "quickstart"


def quickstart(
    output: Path,
    *,
    train_path: Path | None = None,
    dev_path: Path | None = None,
    model: str = DEFAULT_MODEL,
    pipeline: list[str] | None = None,
    max_steps: int = 250,
    eval_frequency: int = 50,
    batch_words: int = 400,
    learn_rate: float = 1e-3,
    frozen: bool = False,
    text: str | None = None,
    lang: str = "en",
) -> dict[str, Any]:
    """Convert data, write a config, train with spaCy, print dev scores and annotate a text.

    Returns the dev scores of the best model.
    """
    if (train_path is None) != (dev_path is None):
        raise ValueError("Give both --train and --dev, or neither (to use the shipped sample).")
    output = Path(output)
    train_path = train_path or SAMPLE_DIR / "train.jsonl"
    dev_path = dev_path or SAMPLE_DIR / "dev.jsonl"
    vocab = spacy.blank(lang).vocab
    train_docs, dev_docs = read_docs(train_path, vocab), read_docs(dev_path, vocab)
    if not train_docs or not dev_docs:
        raise ValueError(f"No documents in {train_path if not train_docs else dev_path}.")
    pipeline = pipeline or infer_pipeline(train_docs)
    msg.info(
        f"{len(train_docs)} train / {len(dev_docs)} dev docs from {train_path} and {dev_path}; "
        f"pipeline: trf + {', '.join(pipeline)}; encoder: {model}"
    )
    corpus = output / "corpus"
    write_docbin(train_docs, corpus / "train.spacy")
    write_docbin(dev_docs, corpus / "dev.spacy")
    config = make_config(
        pipeline,
        lang=lang,
        model=model,
        frozen=frozen,
        max_steps=max_steps,
    )
    config_path = output / "config.cfg"
    write_config(config, config_path)
    overrides = {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "training.eval_frequency": eval_frequency,
        "training.accumulate_gradient": 1,
        "training.batcher.size": batch_words,
        "training.optimizer.learn_rate.initial_rate": learn_rate,
        "training.optimizer.learn_rate.warmup_steps": max_steps // 10,
        "training.patience": 0,
    }
    for stale in ("model-best", "model-last"):
        shutil.rmtree(output / stale, ignore_errors=True)
    train(config_path, output, overrides=overrides)
    nlp = spacy.load(output / "model-best")
    scores = _print_scores(nlp, dev_docs)
    _annotate(nlp, text or (SAMPLE_DIR / "sample.txt").read_text(encoding="utf8").strip())
    msg.good(
        f"Pipeline saved to {output / 'model-best'}: spacy.load() it, or package it with "
        f"python -m spacy package {output / 'model-best'} DIR"
    )
    return scores


def _print_scores(nlp: spacy.Language, dev_docs: list) -> dict[str, Any]:
    from spacy.training import Example

    examples = [Example(nlp.make_doc(doc.text), doc) for doc in dev_docs]
    scores = nlp.evaluate(examples)
    rows = []
    for key, label in (
        ("tag_acc", "TAG accuracy"),
        ("pos_acc", "POS accuracy"),
        ("morph_acc", "MORPH accuracy"),
        ("dep_uas", "UAS"),
        ("dep_las", "LAS"),
        ("ents_p", "NER precision"),
        ("ents_r", "NER recall"),
        ("ents_f", "NER F1"),
        ("cats_score", "Textcat score"),
        ("spans_sc_f", "Spancat F1"),
    ):
        if scores.get(key) is not None:
            rows.append((label, f"{100 * scores[key]:.1f}"))
    rows.append(("Words per second", f"{scores['speed']:.0f}"))
    msg.table(rows, title="Dev scores (best model)", header=("metric", "value"), divider=True)
    return scores


def _annotate(nlp: spacy.Language, text: str) -> None:
    doc = nlp(text)
    msg.divider("Annotated sample")
    print(text, "\n")
    if doc.has_annotation("TAG"):
        print(" ".join(f"{t.text}/{t.tag_}" for t in doc if not t.is_space), "\n")
    if doc.ents:
        print("Entities:", ", ".join(f"{e.text} [{e.label_}]" for e in doc.ents), "\n")
    if doc.cats:
        best = sorted(doc.cats.items(), key=lambda kv: -kv[1])
        print("Categories:", ", ".join(f"{k} {v:.2f}" for k, v in best), "\n")
