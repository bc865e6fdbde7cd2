"""Accuracy floor on real data: a tagger and a morphologizer fine-tuned through listeners on 1,000
UD English-EWT training sentences, scored on 300 dev sentences (../shared/data)."""

from pathlib import Path

import pytest
from spacy.cli.evaluate import evaluate
from spacy.cli.train import train
from spacy.tokens import DocBin
from spacy.training.converters import conllu_to_docs

from spacy_trf.cli.init_config import make_config

from .conftest import data_dir

EWT = data_dir() / "ud-en-ewt"
# Floors from a measured run (TAG 0.939, UPOS 0.946 after 150 steps), minus a margin for noise.
TAG_FLOOR = 0.92
POS_FLOOR = 0.93


def read_sentences(path: Path, limit: int) -> list:
    docs = conllu_to_docs(path.read_text(encoding="utf8"), n_sents=1, no_print=True)
    out = []
    for doc in docs:
        out.append(doc)
        if len(out) == limit:
            break
    return out


@pytest.mark.slow
@pytest.mark.skipif(not EWT.exists(), reason="needs ../shared/data/ud-en-ewt")
def test_ewt_tagger_reaches_its_floor(tmp_path: Path, model_dirs: dict) -> None:
    train_docs = read_sentences(EWT / "en_ewt-ud-train.conllu", 1000)
    dev_docs = read_sentences(EWT / "en_ewt-ud-dev.conllu", 300)
    DocBin(docs=train_docs).to_disk(tmp_path / "train.spacy")
    DocBin(docs=dev_docs).to_disk(tmp_path / "dev.spacy")
    steps = 150
    config = make_config(["tagger", "morphologizer"], model=model_dirs["bert"], max_steps=steps)
    (tmp_path / "config.cfg").write_text(config.to_str())
    overrides = {
        "paths.train": str(tmp_path / "train.spacy"),
        "paths.dev": str(tmp_path / "dev.spacy"),
        "training.eval_frequency": steps,
        "training.accumulate_gradient": 1,
        "training.batcher.size": 600,
        "training.optimizer.learn_rate.warmup_steps": 30,
        "training.optimizer.learn_rate.initial_rate": 1e-3,
        "training.logger.progress_bar": False,
    }
    train(tmp_path / "config.cfg", tmp_path / "out", overrides=overrides)
    scores = evaluate(str(tmp_path / "out" / "model-last"), tmp_path / "dev.spacy")
    tag, pos = scores["tag_acc"], scores["pos_acc"]
    print(f"EWT 1k, {steps} steps, dev 300: TAG {tag:.4f} UPOS {pos:.4f}")
    assert scores["tag_acc"] >= TAG_FLOOR
    assert scores["pos_acc"] >= POS_FLOOR
