"""The accuracy benchmark's data conversion and baseline configs (benchmarks/accuracy/run.py)."""

import argparse
import json
import sys
from pathlib import Path

import spacy
from thinc.api import Config

from .fixtures_models import minilm_path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks" / "accuracy"))
import run as bench  # noqa: E402


def args(**kwargs: object) -> argparse.Namespace:
    defaults = {
        "max_steps": 0,
        "eval_frequency": 0,
        "set": [],
        "model": minilm_path(),
    }  # a model init-config can read
    return argparse.Namespace(**{**defaults, **kwargs})


def test_emotion_lines_become_one_hot_exclusive_cats(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("i feel great today;joy\ni am so angry;anger\nwhat a mess; really;anger\n")
    docs = bench.read_task_docs("emotion", path, spacy.blank("en"))
    assert [d.text for d in docs] == ["i feel great today", "i am so angry", "what a mess; really"]
    assert docs[0].cats == {"anger": 0.0, "joy": 1.0}
    assert all(sum(d.cats.values()) == 1.0 for d in docs)


def test_spacy_transformers_config_keeps_heads_and_schedule(tmp_path: Path) -> None:
    ours = Config().from_disk(bench.write_config("conll", "trf-plain", tmp_path, args()))
    theirs = Config().from_disk(bench.write_config("conll", "st", tmp_path, args()))
    text = theirs.to_str()
    assert "spacy-trf." not in text
    assert theirs["components"]["trf"]["factory"] == "transformer"
    assert theirs["components"]["trf"]["model"]["name"] == minilm_path()
    ner = theirs["components"]["ner"]["model"]
    assert ner["@architectures"] == ours["components"]["ner"]["model"]["@architectures"]
    assert ner["tok2vec"]["@architectures"] == "spacy-transformers.TransformerListener.v1"
    schedule = theirs["training"]["optimizer"]["learn_rate"]
    assert schedule["initial_rate"] == bench.ST_LEARN_RATE
    assert schedule["total_steps"] == ours["training"]["optimizer"]["learn_rate"]["total_steps"]


def test_run_config_applies_overrides_and_timed_logger(tmp_path: Path) -> None:
    overrides = [("training.optimizer.learn_rate.initial_rate", "5e-4")]
    path = bench.write_config("emotion", "trf", tmp_path, args(set=overrides))
    config = Config().from_disk(path)
    assert config["training"]["optimizer"]["learn_rate"]["initial_rate"] == 5e-4
    assert config["training"]["max_steps"] == bench.TASKS["emotion"].max_steps
    assert config["training"]["logger"]["@loggers"] == "spacy-trf-bench.TimedLogger.v1"
    assert config["components"]["textcat"]["model"]["pooling"] == "mean"


def test_results_merge_replaces_only_the_same_run(tmp_path: Path) -> None:
    results = tmp_path / "accuracy.json"
    row = {"task": "ewt", "system": "trf", "device": "cpu", "metric": "UPOS", "value": 1.0}
    other = {**row, "device": "gpu"}
    bench.merge_results(results, [row, other])
    bench.merge_results(results, [{**row, "value": 2.0}])
    saved = json.loads(results.read_text())
    assert sorted((r["device"], r["value"]) for r in saved) == [("cpu", 2.0), ("gpu", 1.0)]
