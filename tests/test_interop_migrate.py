"""spacy-transformers -> spacy-trf: the pipeline saved by spacy-transformers 1.4.0
(../shared/compat) migrates without spacy-transformers and predicts what it predicted; configs
migrate setting by setting; bad inputs get one clear error and leave nothing behind."""

import importlib.util
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
import srsly
import torch
from thinc.api import Config, Model, chain, reduce_mean
from typer.testing import CliRunner

from spacy_trf.cli import app
from spacy_trf.interop import MigrationError, migrate, migrate_config
from spacy_trf.interop.migrate import tokens_with_other_pieces

from .fixtures_models import COMPAT

SAVED = COMPAT / "spacy-transformers-1.4.0-pipeline"
EXPECTED = COMPAT / "expected-spacy-transformers-1.4.0.json"
needs_saved = pytest.mark.skipif(not SAVED.exists(), reason="needs ../shared/compat")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("migrate") / "pipeline"
    migrate(SAVED, out)
    return out


def expected_texts() -> list[dict]:
    return json.loads(EXPECTED.read_text())["texts"]


@needs_saved
def test_migrated_pipeline_reproduces_spacy_transformers(migrated: Path) -> None:
    assert importlib.util.find_spec("spacy_transformers") is None  # not needed, not installed
    nlp = spacy.load(migrated)
    assert nlp.pipe_names == ["transformer", "tagger"]
    assert nlp.get_pipe_meta("transformer").factory == "trf"
    cfg = nlp.config["components"]["transformer"]["model"]
    assert cfg["alignment"] == {"@alignments": "spacy-trf.st_compat_alignment.v1"}
    assert (migrated / "transformer" / "model" / "model.safetensors").is_file()
    expected = expected_texts()
    assert len(expected) == 4
    labels = expected[0]["tag_labels"]
    assert list(nlp.get_pipe("tagger").labels) == labels
    for want in expected:
        doc = nlp(want["text"])
        assert [t.text for t in doc] == want["tokens"]
        assert [t.tag_ for t in doc] == want["tags"]
        scores = nlp.get_pipe("tagger").model.predict([doc])[0][:3]
        # The expected values are rounded to 5 decimals.
        np.testing.assert_allclose(scores, want["tagger_scores_first3"], atol=1e-5)
        # Every non-padding row of the window, special tokens included, as spacy-transformers.
        out = doc._.trf
        rows = np.concatenate([out.last_hidden_state, out.special_hidden_state])
        np.testing.assert_allclose(rows.mean(0)[:8], want["hidden_mean_first8"], atol=1e-5)


@needs_saved
def test_migrated_pipeline_trains_further(migrated: Path) -> None:
    from spacy.training import Example

    nlp = spacy.load(migrated)
    doc = nlp.make_doc("The cat sat on the mat .")
    example = Example.from_dict(
        doc, {"tags": ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"]}
    )
    optimizer = nlp.resume_training()
    losses = [nlp.update([example], sgd=optimizer, losses={})["tagger"] for _ in range(8)]
    assert losses[-1] < losses[0]


@needs_saved
def test_exact_alignment_reports_what_moves(migrated: Path, tmp_path: Path) -> None:
    texts = [t["text"] for t in expected_texts()]
    report = migrate(SAVED, tmp_path / "exact", exact_alignment=True, texts=texts)
    nlp = spacy.load(tmp_path / "exact")
    cfg = nlp.config["components"]["transformer"]["model"]
    assert cfg["alignment"] == {"@alignments": "spacy-trf.exact_alignment.v1"}
    assert report.sample_size == 4
    assert report.tokens_compared == sum(len(t["tokens"]) for t in expected_texts())
    # The first sentence: 18 of its 23 tokens get other pieces from the exact alignment.
    compat = spacy.load(migrated)
    assert tokens_with_other_pieces(compat(texts[0]), nlp(texts[0])) == 18
    assert 0 < report.tokens_changed < report.tokens_compared
    tags = [[t.tag_ for t in nlp(text)] for text in texts]
    pairs = zip(tags, expected_texts(), strict=True)
    n_diff = sum(a != b for got, w in pairs for a, b in zip(got, w["tags"], strict=True))
    assert report.annotations_changed.get("tag", 0) == n_diff > 0


@needs_saved
def test_saved_config_migrates_with_the_windows_matched() -> None:
    config, notes = migrate_config(Config().from_disk(SAVED / "config.cfg", interpolate=False))
    trf = config["components"]["transformer"]
    assert trf["factory"] == "trf"
    assert trf["max_batch_pieces"] == 4096
    model = trf["model"]
    assert model["@architectures"] == "spacy-trf.TransformerModel.v2"
    assert (model["name"], model["window"], model["stride"]) == ("tiny-random-roberta", 128, 96)
    assert model["get_spans"] == {"@span_getters": "spacy-trf.doc_spans.v1"}
    assert "use_fast" not in model["tokenizer_config"]
    listener = config["components"]["tagger"]["model"]["tok2vec"]
    assert listener["@architectures"] == "spacy-trf.TransformerListener.v1"
    assert listener["pooling"] == {"@layers": "reduce_mean.v1"}
    assert (listener["grad_factor"], listener["upstream"]) == (1.0, "*")
    assert any("128 tokens every 96" in n for n in notes)


ST_TOK2VEC_CONFIG = """
[nlp]
lang = "en"
pipeline = ["tok2vec", "tagger", "ner"]

[components]

[components.tok2vec]
factory = "tok2vec"

[components.tok2vec.model]
@architectures = "spacy-transformers.Tok2VecTransformer.v3"
name = "{model}"
grad_factor = 0.5
mixed_precision = true
tokenizer_config = {{"use_fast": false}}
transformer_config = {{}}

[components.tok2vec.model.get_spans]
@span_getters = "spacy-transformers.sent_spans.v1"

[components.tok2vec.model.pooling]
@layers = "reduce_max.v1"

[components.tok2vec.model.grad_scaler_config]
enabled = true

[components.tagger]
factory = "tagger"

[components.tagger.model]
@architectures = "spacy.Tagger.v2"

[components.tagger.model.tok2vec]
@architectures = "spacy.Tok2VecListener.v1"
width = 32
upstream = "*"

[components.ner]
factory = "ner"

[components.ner.model]
@architectures = "spacy.TransitionBasedParser.v2"
state_type = "ner"
hidden_width = 16
maxout_pieces = 2
use_upper = false

[components.ner.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "tok2vec"

[components.ner.model.tok2vec.pooling]
@layers = "reduce_first.v1"
"""


def test_tok2vec_component_and_both_listener_kinds_migrate(model_dirs: dict[str, str]) -> None:
    config, notes = migrate_config(
        Config().from_str(ST_TOK2VEC_CONFIG.format(model=model_dirs["roberta"]))
    )
    comps = config["components"]
    assert comps["tok2vec"]["factory"] == "trf"
    assert comps["tok2vec"]["mixed_precision"] is True
    assert comps["tok2vec"]["model"]["get_spans"] == {"@span_getters": "spacy-trf.sent_spans.v1"}
    tagger = comps["tagger"]["model"]["tok2vec"]
    assert tagger["pooling"] == {"@layers": "reduce_max.v1"}  # the encoder's pooling moved here
    assert (tagger["grad_factor"], tagger["upstream"]) == (0.5, "tok2vec")
    ner = comps["ner"]["model"]["tok2vec"]
    assert ner["pooling"] == {"@layers": "reduce_first.v1"}
    assert any("use_fast" in n for n in notes)
    assert any("grad_scaler_config" in n for n in notes)
    assert any("pooling and grad_factor moved" in n for n in notes)
    # Initializing samples have no sentences: read whole docs to build it.
    comps["tok2vec"]["model"]["get_spans"] = {"@span_getters": "spacy-trf.doc_spans.v1"}
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    nlp.get_pipe("tagger").add_label("X")
    nlp.get_pipe("ner").add_label("ORG")
    nlp.initialize()
    doc = nlp("Two sentences here. And another one.")
    assert len(doc._.trf.align.lengths) == len(doc)


def test_listeners_on_a_cnn_tok2vec_stay_as_they_are() -> None:
    cfg = Config().from_str(ST_TOK2VEC_CONFIG.format(model="m"))
    cfg["components"]["cnn"] = {
        "factory": "tok2vec",
        "model": {"@architectures": "spacy.HashEmbedCNN.v2"},
    }
    cfg["components"]["tagger"]["model"]["tok2vec"]["upstream"] = "cnn"
    config, _ = migrate_config(cfg)
    assert config["components"]["cnn"] == cfg["components"]["cnn"]
    assert config["components"]["tagger"]["model"]["tok2vec"] == {
        "@architectures": "spacy.Tok2VecListener.v1",
        "width": 32,
        "upstream": "cnn",
    }


def test_unmigratable_settings_are_named() -> None:
    cfg = Config().from_str(ST_TOK2VEC_CONFIG.format(model="m"))
    cfg["components"]["tok2vec"]["model"]["get_spans"] = {"@span_getters": "my.spans.v1"}
    with pytest.raises(MigrationError, match="my.spans.v1"):
        migrate_config(cfg)
    cfg = Config().from_str(ST_TOK2VEC_CONFIG.format(model="m"))
    inline = dict(cfg["components"]["tok2vec"]["model"])
    cfg["components"]["tagger"]["model"]["tok2vec"] = inline
    with pytest.raises(MigrationError, match=r"components\.tagger\.model\.tok2vec"):
        migrate_config(cfg)


@needs_saved
def test_bad_sources_and_outputs_get_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        migrate(tmp_path / "nope", tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    with pytest.raises(MigrationError, match="not empty"):
        migrate(SAVED, busy)
    # A state dict that would run code when unpickled is refused, and nothing is written.
    evil = tmp_path / "evil"
    shutil.copytree(SAVED, evil)
    msg = srsly.msgpack_loads((evil / "transformer" / "model").read_bytes())
    shim = srsly.msgpack_loads(msg["shims"][1][0])
    buf = io.BytesIO()
    torch.save({"weights": Path("/")}, buf)  # any non-tensor object: needs a full unpickle
    shim["state"] = buf.getvalue()
    msg["shims"][1][0] = srsly.msgpack_dumps(shim)
    (evil / "transformer" / "model").chmod(0o644)
    (evil / "transformer" / "model").write_bytes(srsly.msgpack_dumps(msg))
    with pytest.raises(MigrationError, match="weights_only"):
        migrate(evil, tmp_path / "evil-out")
    assert not (tmp_path / "evil-out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@needs_saved
def test_meta_no_longer_requires_spacy_transformers(tmp_path: Path) -> None:
    source = tmp_path / "st"
    shutil.copytree(SAVED, source)
    meta = srsly.read_json(SAVED / "meta.json")
    meta.update(requirements=["spacy-transformers>=1.4.0,<1.5.0"], spacy_version=">=3.4.0,<3.5.0")
    (source / "meta.json").chmod(0o644)
    srsly.write_json(source / "meta.json", meta)
    migrate(source, tmp_path / "out")
    saved = srsly.read_json(tmp_path / "out" / "meta.json")
    assert not any("spacy-transformers" in r for r in saved.get("requirements", []))
    assert saved["spacy_version"] == spacy.util.get_minor_version_range(spacy.__version__)


@needs_saved
def test_cli_migrates_and_reports(tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(t["text"] for t in expected_texts()))
    result = CliRunner().invoke(
        app, ["migrate", str(SAVED), str(tmp_path / "out"), "--exact-alignment",
              "--texts", str(texts)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "spacy-trf.exact_alignment.v1" in result.output
    assert "On 4 texts" in result.output and "tag " in result.output
    result = CliRunner().invoke(
        app, ["migrate", str(SAVED / "config.cfg"), str(tmp_path / "c.cfg")]
    )
    assert result.exit_code == 0, result.output
    assert Config().from_disk(tmp_path / "c.cfg")["components"]["transformer"]["factory"] == "trf"
    result = CliRunner().invoke(app, ["migrate", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert result.exit_code == 1 and "Error:" in result.output


def _unused(model: Model, X: Any, is_train: bool) -> Any:
    raise NotImplementedError


def saved_as_spacy_transformers(model: Model) -> bytes:
    """A component model's bytes as spacy-transformers 1.4 saves them: its listener is
    chain(TransformerListener, trfs2arrays(reduce_mean)) (checked against real bytes below)."""
    host = model.copy()
    root = next(n for n in host.walk() if n.name == "spacy-trf.TokenVectors")
    theirs = chain(
        Model("transformer-listener", _unused, dims={"nO": None}),
        Model("trfs2arrays", _unused, layers=[reduce_mean()]),
    )
    host.replace_node(root, theirs)
    return host.to_bytes()


@needs_saved
def test_the_spacy_transformers_layout_of_the_fixtures_is_the_real_one(migrated: Path) -> None:
    def layout(msg: dict) -> list[tuple]:
        params = [{k: np.asarray(v).shape for k, v in p.items() if v is not None}
                  for p in msg["params"]]  # fmt: skip
        return [(n["name"], p) for n, p in zip(msg["nodes"], params, strict=True)
                if ">>" not in n["name"]]  # fmt: skip

    real = srsly.msgpack_loads((SAVED / "tagger" / "model").read_bytes())
    tagger = spacy.load(migrated).get_pipe("tagger").model
    ours = srsly.msgpack_loads(saved_as_spacy_transformers(tagger))
    assert layout(ours) == layout(real)


ST_LISTENER = {
    "@architectures": "spacy-transformers.TransformerListener.v1",
    "grad_factor": 1.0,
    "upstream": "*",
    "pooling": {"@layers": "reduce_mean.v1"},
}
HEADS = {
    "ner": {"factory": "ner", "model": {
        "@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner",
        "hidden_width": 16, "maxout_pieces": 2, "use_upper": True, "nO": None,
        "tok2vec": ST_LISTENER}},
    "textcat": {"factory": "textcat", "model": {
        "@architectures": "spacy.TextCatEnsemble.v2", "nO": None, "tok2vec": ST_LISTENER,
        "linear_model": {"@architectures": "spacy.TextCatBOW.v3", "exclusive_classes": True,
                         "ngram_size": 1, "no_output_layer": False, "nO": None}}},
}  # fmt: skip


@needs_saved
def test_ner_and_textcat_weights_move_into_the_migrated_model(
    migrated: Path, tmp_path: Path
) -> None:
    """Heads trained on the (frozen) encoder, saved in spacy-transformers' layer structure,
    predict the same after migration; a disabled component keeps what it saved."""
    from spacy.training import Example

    st_config = Config().from_disk(SAVED / "config.cfg", interpolate=False)
    st_config["nlp"]["pipeline"] = ["transformer", "tagger", "ner", "textcat"]
    st_config["components"].update(HEADS)
    config, _ = migrate_config(st_config, limits={"transformer": 126})
    config["components"]["transformer"]["model"]["name"] = str(migrated / "transformer" / "model")
    config["components"]["transformer"]["frozen"] = True
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    nlp.tokenizer.from_disk(SAVED / "tokenizer")
    texts = [t["text"] for t in expected_texts()]
    examples = []
    for i, want in enumerate(expected_texts()):
        doc = nlp.make_doc(want["text"])
        ents = [(doc[0].idx, doc[1].idx + len(doc[1]), "ORG")]
        cats = {"A": float(i % 2), "B": float(1 - i % 2)}
        annots = {"entities": ents, "cats": cats, "tags": want["tags"]}
        examples.append(Example.from_dict(doc, annots))
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 0.01
    for _ in range(30):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    st_dir = tmp_path / "st-pipeline"
    shutil.copytree(SAVED, st_dir)
    for path in [st_dir, *st_dir.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    st_config.to_disk(st_dir / "config.cfg")
    for name in ("tagger", "ner", "textcat"):
        comp = nlp.get_pipe(name)
        shutil.rmtree(st_dir / name, ignore_errors=True)
        comp.to_disk(st_dir / name, exclude=["vocab"])
        (st_dir / name / "model").write_bytes(saved_as_spacy_transformers(comp.model))
    before = list(nlp.pipe(texts))
    ruler = nlp.add_pipe("entity_ruler", name="ruler")
    ruler.add_patterns([{"label": "GPE", "pattern": "Oslo"}])  # type: ignore[attr-defined]
    ruler.to_disk(st_dir / "ruler")
    st_config["nlp"]["pipeline"].append("ruler")
    st_config["nlp"]["disabled"] = ["ruler"]
    st_config["components"]["ruler"] = {"factory": "entity_ruler"}
    st_config.to_disk(st_dir / "config.cfg")
    nlp.vocab.to_disk(st_dir / "vocab")
    out = migrate(st_dir, tmp_path / "out").output
    again = spacy.load(out)
    assert again.disabled == ["ruler"]
    assert any(doc.ents for doc in before)
    for a, b in zip(before, again.pipe(texts), strict=True):
        assert [t.tag_ for t in a] == [t.tag_ for t in b]
        assert [(e.start, e.end, e.label_) for e in a.ents] == [
            (e.start, e.end, e.label_) for e in b.ents
        ]
        assert a.cats == pytest.approx(b.cats, abs=1e-6)
    again.enable_pipe("ruler")
    assert ("Oslo", "GPE") in [(e.text, e.label_) for e in again(texts[0]).ents]
