"""export-hf: components trained on a trf encoder become Hugging Face classification models that
transformers' pipelines load without spacy-trf and that predict what the spaCy component does."""

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from spacy_trf.interop import ExportError, export_hf

from .fixtures_models import build_head

TEXTS = [
    "The quick brown fox jumps over the lazy dog near Paris.",
    "Ünïcödé wörds, emoji 🙂 and numbers like 3.14 split into several pieces.",
    "Short one.",
]
TAGS = ["DT", "JJ", "NN", "VB", "IN", "PUNCT"]
CATS = ["pos", "neg", "neutral"]


def listener(pooling: str = "reduce_first.v1", layers: Any = "last") -> dict[str, Any]:
    return {"@architectures": "spacy-trf.TransformerListener.v1", "pooling": {"@layers": pooling},
            "layers": layers}  # fmt: skip


def textcat_model(exclusive: bool, pooling: str = "cls") -> dict[str, Any]:
    return {
        "@architectures": "spacy-trf.TransformerTextCat.v1", "exclusive_classes": exclusive,
        "pooling": pooling, "tok2vec": {"@architectures": "spacy-trf.TransformerOutputListener.v1"},
    }  # fmt: skip


def trained(path: str, **components: dict[str, Any]) -> spacy.Language:
    """A trf pipeline with the given components (name -> add_pipe config), initialized on
    examples with every label, with random output layers and a perturbed encoder (so the export
    must carry the fine-tuned weights, not the ones on disk)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"model": {"name": path}})
    for name, config in components.items():
        nlp.add_pipe(config.pop("factory", name), name=name, config=config)
    examples = []
    for i, text in enumerate(TEXTS):
        doc = nlp.make_doc(text)
        n = range(len(doc))
        morphs = ("Number=Sing", "Number=Plur|Person=3", "")
        ref = Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc],
                  tags=[TAGS[(i + j) % len(TAGS)] for j in n],
                  pos=[("NOUN", "VERB", "ADJ")[(i + j) % 3] for j in n],
                  morphs=[morphs[(i * j) % 3] for j in n])  # fmt: skip
        ref.cats = {c: float(j == i % len(CATS)) for j, c in enumerate(CATS)}
        examples.append(Example(doc, ref))
    nlp.initialize(lambda: examples)
    rng = np.random.default_rng(0)
    for name in components:
        for node in nlp.get_pipe(name).model.walk():
            if node.name in ("softmax", "linear") and node.has_param("W"):
                W = node.get_param("W")
                node.set_param("W", rng.normal(0, 0.5, W.shape).astype("f"))
    with torch.no_grad():
        for p in nlp.get_pipe("trf").model.shims[0].hf_model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return nlp


def first_piece_labels(hf_dir: Path, doc: Doc) -> list[str]:
    """Each spaCy token's label from the HF pipeline: that of its first overlapping piece."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pieces = pipeline("token-classification", model=str(hf_dir))(doc.text)
    labels = []
    for t in doc:
        start, end = t.idx, t.idx + len(t)
        first = next(p for p in pieces if p["end"] > start and p["start"] < end
                     and doc.text[p["start"]:p["end"]].strip())  # fmt: skip
        labels.append(first["entity"])
    return labels


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_tagger_exports_to_a_token_classifier_with_the_same_tags(
    model_dirs: dict, family: str, tmp_path: Path
) -> None:
    nlp = trained(model_dirs[family], tagger={"model": {"@architectures": "spacy.Tagger.v2",
                                                        "tok2vec": listener()}})  # fmt: skip
    report = export_hf(nlp, tmp_path / "hf", "tagger")
    assert report.exact and report.hf_class.endswith("ForTokenClassification")
    assert report.labels == nlp.get_pipe("tagger").labels
    docs = list(nlp.pipe(TEXTS))
    assert len({t.tag_ for d in docs for t in d}) > 2  # the comparison is not vacuous
    for doc in docs:
        assert first_piece_labels(tmp_path / "hf", doc) == [t.tag_ for t in doc]
    # The scores themselves: the tagger's logits are the HF model's first-piece logits.
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    doc = nlp.make_doc(TEXTS[0])
    scores = nlp.get_pipe("tagger").model.predict([nlp.get_pipe("trf")(doc)])[0]
    enc = tok(doc.text, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        logits = model(**enc).logits[0].numpy()
    for t in doc:
        first = next(i for i, (a, b) in enumerate(offsets) if b > max(a, t.idx)
                     and a < t.idx + len(t) and doc.text[a:b].strip())  # fmt: skip
        np.testing.assert_allclose(scores[t.i], logits[first], atol=1e-4)


@pytest.mark.parametrize(("family", "factory"), [("bert", "textcat"),
                                                  ("roberta", "textcat_multilabel")])  # fmt: skip
def test_textcat_exports_to_a_sequence_classifier_with_the_same_scores(
    model_dirs: dict, family: str, factory: str, tmp_path: Path
) -> None:
    exclusive = factory == "textcat"
    nlp = trained(model_dirs[family], cats={"factory": factory, "model": textcat_model(exclusive)})
    report = export_hf(nlp, tmp_path / "hf", "cats")
    assert report.exact and report.hf_class.endswith("ForSequenceClassification")
    clf = pipeline("text-classification", model=str(tmp_path / "hf"), top_k=None)
    for doc, expected in zip(nlp.pipe(TEXTS), clf(TEXTS), strict=True):
        assert {e["label"] for e in expected} == set(CATS)
        for e in expected:
            assert doc.cats[e["label"]] == pytest.approx(e["score"], abs=1e-4)
        if not exclusive:
            assert sum(doc.cats.values()) != pytest.approx(1.0)  # sigmoids


def test_morphologizer_round_trips_through_hf_token_classifier(
    model_dirs: dict, tmp_path: Path
) -> None:
    nlp = trained(model_dirs["roberta"], morphologizer={
        "model": {"@architectures": "spacy.Tagger.v2", "tok2vec": listener()}})  # fmt: skip
    report = export_hf(nlp, tmp_path / "hf", "morphologizer")
    assert any("POS=" in label for label in report.labels)
    back = spacy.blank("en")
    back.add_pipe("hf_token_classifier", config={"model": str(tmp_path / "hf"),
                                                 "annotate": "morph"})  # fmt: skip
    for doc, again in zip(nlp.pipe(TEXTS), back.pipe(TEXTS), strict=True):
        assert [(t.pos_, str(t.morph)) for t in again] == [(t.pos_, str(t.morph)) for t in doc]
    assert len({t.pos_ for d in nlp.pipe(TEXTS) for t in d}) > 1
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_hf(nlp, tmp_path / "hf", "morphologizer")


def test_what_cannot_be_expressed_gets_one_clear_error(model_dirs: dict, tmp_path: Path) -> None:
    nlp = trained(
        model_dirs["roberta"],
        mean_tagger={"factory": "tagger", "model": {"@architectures": "spacy.Tagger.v2",
                                                    "tok2vec": listener("reduce_mean.v1")}},
        layer_tagger={"factory": "tagger", "model": {"@architectures": "spacy.Tagger.v2",
                                                     "tok2vec": listener(layers=[-1, -2])}},
        mean_cats={"factory": "textcat", "model": textcat_model(True, "mean")},
    )  # fmt: skip
    nlp.add_pipe("ner", config={"model": {"@architectures": "spacy.TransitionBasedParser.v2",
                                          "state_type": "ner", "extra_state_tokens": False,
                                          "hidden_width": 8, "maxout_pieces": 2,
                                          "use_upper": True, "tok2vec": listener()}})  # fmt: skip
    report = export_hf(nlp, tmp_path / "mean", "mean_tagger")
    assert not report.exact and any("reduce_mean" in note for note in report.notes)
    with pytest.raises(ExportError, match="layers = \\[-1, -2\\].*last layer"):
        export_hf(nlp, tmp_path / "x", "layer_tagger")
    with pytest.raises(ExportError, match='class token. Train it with pooling = "cls"'):
        export_hf(nlp, tmp_path / "x", "mean_cats")
    with pytest.raises(ExportError, match="transition-based.*hf_token_classifier"):
        export_hf(nlp, tmp_path / "x", "ner")
    with pytest.raises(ExportError, match="no component 'nope'"):
        export_hf(nlp, tmp_path / "x", "nope")
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_hybrid_features_are_refused(model_dirs: dict, tmp_path: Path) -> None:
    embed = {"@architectures": "spacy.MultiHashEmbed.v2", "width": 16, "attrs": ["NORM", "SHAPE"],
             "rows": [100, 50], "include_static_vectors": False}  # fmt: skip
    hybrid = {"@architectures": "spacy-trf.HybridTok2Vec.v1", "transformer": listener(),
              "embed": embed}  # fmt: skip
    nlp = trained(
        model_dirs["roberta"],
        tagger={"model": {"@architectures": "spacy.Tagger.v2", "tok2vec": hybrid}},
    )
    with pytest.raises(ExportError, match="concatenates the transformer's rows with other"):
        export_hf(nlp, tmp_path / "x", "tagger")


def test_cli_export_loads_without_spacy_trf(model_dirs: dict, tmp_path: Path) -> None:
    nlp = trained(model_dirs["bert"], tagger={"model": {"@architectures": "spacy.Tagger.v2",
                                                        "tok2vec": listener()}})  # fmt: skip
    nlp.add_pipe("hf_token_classifier", config={"model": build_head(
        model_dirs["bert"], tmp_path / "ner", ["O", "B-X", "I-X"], "token")})  # fmt: skip
    nlp.get_pipe("hf_token_classifier").initialize()
    nlp.to_disk(tmp_path / "pipe")
    for name in ("tagger", "hf_token_classifier"):
        cli = [sys.executable, "-m", "spacy_trf", "export-hf", str(tmp_path / "pipe"),
               str(tmp_path / name), "--component", name]  # fmt: skip
        done = subprocess.run(cli, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    code = (
        "import sys, json; sys.modules['spacy_trf'] = None\n"
        "from transformers import pipeline\n"
        f"p = pipeline('token-classification', model={str(tmp_path / 'tagger')!r})\n"
        f"print(json.dumps([x['entity'] for x in p({TEXTS[0]!r})]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout.strip().splitlines()[-1])) <= set(TAGS)
    done = subprocess.run(
        [sys.executable, "-m", "spacy_trf", "export-hf", str(tmp_path / "pipe"),
         str(tmp_path / "y"), "--component", "trf"], capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1 and "cannot be expressed" in done.stderr
