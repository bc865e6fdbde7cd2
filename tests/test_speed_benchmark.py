"""The speed benchmark's harness (benchmarks/speed/run.py and worker.py) on a tiny made-up
treebank: configs, the worker protocol, the table and the ratios."""

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from thinc.api import Config

RUN = Path(__file__).parent.parent / "benchmarks" / "speed" / "run.py"
spec = importlib.util.spec_from_file_location("speed_run", RUN)
assert spec is not None and spec.loader is not None
bench: Any = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

WORDS = "The quick dogs ran home after a long day at the busy park".split()
TAGS = ["DT", "JJ", "NNS", "VBD", "RB", "IN", "DT", "JJ", "NN", "IN", "DT", "JJ", "NN"]


def conllu(n_sents: int) -> str:
    sents = []
    for i in range(n_sents):
        words = WORDS[: 4 + i % 9]
        lines = [
            "\t".join([str(j + 1), w, w.lower(), "X", TAGS[j], "_", str(j), "dep" if j else "root"])
            + "\t_\t_"
            for j, w in enumerate(words)
        ]
        sents.append(f"# sent_id = s{i}\n# text = {' '.join(words)}\n" + "\n".join(lines))
    return "\n\n".join(sents) + "\n\n"


def test_configs_share_heads_and_attention_dropout(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    paths = bench.write_configs(model_dirs["bert"], tmp_path)
    ours, theirs, same = (Config().from_disk(paths[k]) for k in ("trf", "st", "st-same"))
    st = theirs["components"]["trf"]
    assert st["factory"] == "transformer" and "spacy-trf." not in theirs.to_str()
    assert st["model"]["transformer_config"] == {}  # spacy-transformers' default
    dropout_off = ours["components"]["trf"]["model"]["transformer_config"]
    assert dropout_off == {"attention_probs_dropout_prob": 0.0}
    assert same["components"]["trf"]["model"]["transformer_config"] == dropout_off
    assert (
        theirs["components"]["tagger"]["model"]["@architectures"]
        == (ours["components"]["tagger"]["model"]["@architectures"])
    )
    assert theirs["training"]["batcher"] == ours["training"]["batcher"]


def test_harness_runs_workers_and_records_ratios(
    model_dirs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data" / "ud-en-ewt"
    data.mkdir(parents=True)
    (data / "en_ewt-ud-dev.conllu").write_text(conllu(30))
    (data / "en_ewt-ud-train.conllu").write_text(conllu(40))
    results = tmp_path / "speed.json"
    bench.main(
        [
            "--data", str(tmp_path / "data"), "--model", model_dirs["roberta"],
            "--systems", "trf,trf-tagger,raw-16", "--inference", "torch,int8",
            "--repeats", "2", "--train-sents", "40", "--results", str(results),
        ]
    )  # fmt: skip
    rows = json.loads(results.read_text())
    systems = {(r["measure"].split(",")[0], r["system"]) for r in rows}
    assert ("inference EWT dev", "spacy-trf + tagger, int8") in systems
    assert ("inference EWT dev", "raw HF forward on spacy-trf's own windows") in systems
    assert ("training", "spacy-trf + tagger") in systems
    assert ("inference", "spacy-trf + tagger") in systems  # the long doc
    assert all(r["value"] > 0 and r["command"].startswith("python benchmarks/speed") for r in rows)
    assert all(len(r["passes"]) == 2 for r in rows if "passes" in r)
    out = capsys.readouterr().out
    assert "spacy-trf (trf only) / raw HF forward on its windows" in out
    assert "| ratio (run " in out
    ratio_line = next(line for line in out.splitlines() if "(trf only) / raw HF" in line)
    passes = {(r["measure"], r["system"]): r.get("passes") for r in rows}
    dev = "inference EWT dev"
    ours = passes[(dev, "spacy-trf, trf only")]
    raw = passes[(dev, "raw HF forward on spacy-trf's own windows")]
    # The median of the per-round speed ratios (two rounds: the mean of the two).
    expected = sum(r / o for o, r in zip(ours, raw, strict=True)) / 2
    assert f"| {expected:.2f} |" in ratio_line
