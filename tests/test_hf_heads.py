"""hf_token_classifier and hf_text_classifier: fine-tuned HF heads on spaCy tokens and docs,
equal to transformers' own pipelines, never truncated, saved as plain HF directories, trainable."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from spacy_trf.encoder import ModelLoadError
from spacy_trf.heads import LabelScheme

from .fixtures_models import build_head

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
CATS = ["joy", "anger", "fear"]
# Plain lowercase words: spaCy's tokens are the HF pipeline's words in every tokenizer family
# here (the tiny byte-BPE splits off a lone "Ġ" before capitals, which is a word of its own).
PLAIN = [
    "anna smith moved from paris to the city of new york in the spring",
    "the committee met lord byron and john at oxford university on monday",
    "we saw nothing special there",
]


@pytest.fixture(scope="module")
def heads(model_dirs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("heads")
    out = {}
    for family in ("bert", "roberta", "xlmr"):
        src = model_dirs[family]
        out[f"ner-{family}"] = build_head(src, root / f"ner-{family}", NER_LABELS, "token", 2.0)
        out[f"cats-{family}"] = build_head(src, root / f"cats-{family}", CATS, "sequence")
    bilou = ["O", "B-PER", "I-PER", "L-PER", "U-PER", "B-LOC", "I-LOC", "L-LOC", "U-LOC"]
    out["bilou"] = build_head(model_dirs["bert"], root / "bilou", bilou, "token", 1.0)
    out["upos"] = build_head(model_dirs["bert"], root / "upos", ["NOUN", "VERB", "DET", "ADP"])
    out["tags"] = build_head(model_dirs["bert"], root / "tags", ["NN", "VB", "DT", "IN"])
    out["multi"] = build_head(model_dirs["bert"], root / "multi", CATS, "sequence", 0.0, True)
    out["one"] = build_head(model_dirs["bert"], root / "one", ["positive"], "sequence")
    morph = ["Number=Sing|POS=NOUN", "Number=Plur|POS=NOUN", "POS=VERB"]  # spaCy's spelling
    out["morph"] = build_head(model_dirs["bert"], root / "morph", morph)
    return out


def token_nlp(path: str, **config: object) -> spacy.Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("hf_token_classifier", config={"model": path, **config})
    nlp.initialize()
    return nlp


def hf_entities(path: str, text: str, strategy: str = "first") -> list[tuple[int, int, str]]:
    """transformers' pipeline entities as character spans without surrounding whitespace;
    entities of whitespace alone (a lone space piece of the tiny byte-BPE) have no tokens."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = pipeline("token-classification", model=path, aggregation_strategy=strategy)(text)
    spans = []
    for e in found:
        start, end = e["start"], e["end"]
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            spans.append((start, end, e["entity_group"]))
    return spans


@pytest.mark.parametrize("family", ["bert", "roberta", "xlmr"])
def test_token_probabilities_equal_the_hf_model(heads: dict, family: str) -> None:
    path = heads[f"ner-{family}"]
    nlp = token_nlp(path)
    pipe = nlp.get_pipe("hf_token_classifier")
    text = PLAIN[0]
    doc = nlp.make_doc(text)
    probs = pipe.predict([doc])[0]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path).eval()
    enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        expected = torch.softmax(model(**enc).logits[0], -1).numpy()
    for token in doc:  # the first piece that overlaps the token decides (aggregation "first")
        first = next(i for i, (a, b) in enumerate(offsets) if b > a and a < token.idx + len(token)
                     and b > token.idx)  # fmt: skip
        np.testing.assert_allclose(probs[token.i], expected[first], atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlmr"])
@pytest.mark.parametrize("strategy", ["first", "average", "max"])
def test_entities_equal_transformers_pipeline(heads: dict, family: str, strategy: str) -> None:
    path = heads[f"ner-{family}"]
    nlp = token_nlp(path, aggregation=strategy)
    n_entities = 0
    for text in PLAIN:
        doc = nlp(text)
        ours = [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        assert ours == hf_entities(path, text, strategy)
        n_entities += len(ours)
        scores = doc.spans["hf_token_classifier"].attrs["scores"]
        assert len(scores) == len(doc.ents) and np.all((scores > 0) & (scores <= 1))
    assert n_entities >= 3  # the comparison is not vacuous


def test_long_doc_is_never_truncated(heads: dict) -> None:
    nlp = token_nlp(heads["ner-bert"], window=32, stride=24)
    text = " ".join(PLAIN * 20)  # ~270 tokens, many windows
    doc = nlp(text)
    probs = nlp.get_pipe("hf_token_classifier").predict([doc])[0]
    assert probs.shape == (len(doc), len(NER_LABELS))
    assert np.all(probs.sum(axis=1) > 0.99)  # every token seen, also past the first window
    assert max(e.end for e in doc.ents) > len(doc) - 20


def test_label_schemes_decode_like_their_definitions() -> None:
    bio = LabelScheme.from_labels(tuple(NER_LABELS), "m")
    ids = np.array([1, 2, 0, 2, 2, 1, 1, 3, -1, 4, 6])  # B I O I I B B B-LOC (unseen) I-LOC I-ORG
    starts, ends, types = bio.decode(ids)
    names = [bio.types[t] for t in types]
    assert list(zip(starts, ends, names, strict=True)) == [
        (0, 2, "PER"), (3, 5, "PER"), (5, 6, "PER"), (6, 7, "PER"), (7, 10, "LOC"), (10, 11, "ORG"),
    ]  # fmt: skip
    bilou = LabelScheme.from_labels(("O", "B-X", "I-X", "L-X", "U-X"), "m")
    assert bilou.kind == "BILOU"
    starts, ends, _ = bilou.decode(np.array([4, 4, 1, 2, 3, 3, 0]))
    assert list(zip(starts, ends, strict=True)) == [(0, 1), (1, 2), (2, 5), (5, 6)]
    assert bilou.encode(["U-X", "B-X", "L-X", "O", None, "-"]).tolist() == [4, 1, 3, 0, -1, -1]
    assert bio.encode(["U-PER", "B-LOC", "L-LOC"]).tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match="not among the model's types"):
        bio.encode(["U-MISC"])
    with pytest.raises(ValueError, match="cannot be read as entities"):
        LabelScheme.from_labels(("NOUN", "VERB"), "m")


def test_bilou_model_and_spans_annotation(heads: dict) -> None:
    nlp = token_nlp(heads["bilou"], annotate="spans", spans_key="found")
    pipe = nlp.get_pipe("hf_token_classifier")
    doc = nlp(PLAIN[1])
    assert not doc.ents and len(doc.spans["found"]) > 0
    assert len(doc.spans["found"].attrs["scores"]) == len(doc.spans["found"])
    ids = pipe.predict([nlp.make_doc(PLAIN[1])])[0].argmax(axis=1)
    labels = [pipe.labels[i] for i in ids]
    expected, open_span = [], None  # BILOU read by hand, I/L after another type start anew
    for i, label in enumerate(labels + ["O"]):
        prefix, kind = (label.split("-", 1) + [""])[:2] if label != "O" else ("O", "")
        if open_span and (prefix in ("O", "B", "U") or kind != open_span[1]):
            expected.append((open_span[0], i, open_span[1]))
            open_span = None
        if prefix != "O" and open_span is None:
            open_span = (i, kind)
        if prefix in ("L", "U") and open_span:
            expected.append((open_span[0], i + 1, open_span[1]))
            open_span = None
    assert [(s.start, s.end, s.label_) for s in doc.spans["found"]] == expected


def test_tag_pos_morph_and_errors_for_labels_that_do_not_fit(heads: dict) -> None:
    for annotate, path in (("pos", heads["upos"]), ("tag", heads["tags"])):
        nlp = token_nlp(path, annotate=annotate, aggregation="average")
        pipe = nlp.get_pipe("hf_token_classifier")
        doc = nlp(PLAIN[0])
        probs = pipe.predict([nlp.make_doc(PLAIN[0])])[0]
        assert [getattr(t, f"{annotate}_") for t in doc] == [
            pipe.labels[i] for i in probs.argmax(axis=1)
        ]
        assert len({getattr(t, f"{annotate}_") for t in doc}) > 1
    doc = token_nlp(heads["morph"], annotate="morph")(PLAIN[0])
    assert {str(t.morph) for t in doc} <= {"Number=Sing", "Number=Plur", ""}
    assert {t.pos_ for t in doc} <= {"NOUN", "VERB"} and len({t.pos_ for t in doc}) == 2
    with pytest.raises(ValueError, match="Universal POS"):
        token_nlp(heads["tags"], annotate="pos")
    with pytest.raises(ValueError, match="cannot be read as entities"):
        token_nlp(heads["tags"], annotate="ents")
    with pytest.raises(ValueError, match="annotate must be one of"):
        token_nlp(heads["tags"], annotate="lemma")
    with pytest.raises(ValueError, match="aggregation must be one of"):
        token_nlp(heads["tags"], aggregation="mean")


def test_bad_models_get_one_clear_error(heads: dict, model_dirs: dict, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no TokenClassification head"):
        token_nlp(model_dirs["bert"])
    with pytest.raises(ModelLoadError, match="no SequenceClassification head"):
        nlp = spacy.blank("en")
        nlp.add_pipe("hf_text_classifier", config={"model": heads["ner-bert"]})
        nlp.initialize()
    with pytest.raises(ModelLoadError, match="does not exist"):
        token_nlp(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="needs 'model'"):
        spacy.blank("en").add_pipe("hf_token_classifier")
    with pytest.raises(ValueError, match='"onnx" runs bare encoders only'):
        token_nlp(heads["ner-bert"], inference="onnx")


def test_one_label_models_score_with_a_sigmoid(heads: dict) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("hf_text_classifier", config={"model": heads["one"]})
    clf = pipeline("text-classification", model=heads["one"], top_k=None)
    for doc, expected in zip(nlp.pipe(PLAIN), clf(PLAIN), strict=True):
        assert doc.cats["positive"] == pytest.approx(expected[0]["score"], abs=1e-4)
        assert 0 < doc.cats["positive"] < 1


def test_gradients_equal_finite_differences() -> None:
    """The loss gradient through PieceSoftmax and each aggregation, against the loss itself."""
    from thinc.api import Ragged, chain, reduce_first, reduce_mean

    from spacy_trf.heads.hf_token import PieceSoftmax, reduce_most_confident
    from spacy_trf.pooling import TokenPooler
    from spacy_trf.stitch import LayerRows

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4))
    align = Ragged(np.array([0, 1, 2, 3, 4, 5], dtype="i"), np.array([2, 0, 3, 1], dtype="i"))
    gold = [1, -1, 2, 3]  # the second token has no pieces

    def loss_and_grad(reducer: object, x: np.ndarray) -> tuple[float, np.ndarray]:
        model = chain(PieceSoftmax(), TokenPooler(reducer()))  # type: ignore[operator]
        rows = [LayerRows(x.astype("f"), np.zeros((2, 4), "f"), align, 2, 0)]
        (probs,), backprop = model.begin_update(rows)
        d, loss = np.zeros_like(probs), 0.0
        for i, g in enumerate(gold):
            if g >= 0:
                loss -= float(np.log(probs[i, g]))
                d[i, g] = -1.0 / probs[i, g]
        return loss, backprop([d])[0].d_pieces

    for reducer in (reduce_first, reduce_mean, reduce_most_confident):
        _, grad = loss_and_grad(reducer, logits)
        numeric = np.zeros_like(logits)
        for idx in np.ndindex(*logits.shape):
            up, down = logits.copy(), logits.copy()
            up[idx] += 1e-3
            down[idx] -= 1e-3
            numeric[idx] = (loss_and_grad(reducer, up)[0] - loss_and_grad(reducer, down)[0]) / 2e-3
        np.testing.assert_allclose(grad, numeric, atol=2e-3)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlmr"])
def test_cats_equal_transformers_pipeline(heads: dict, family: str) -> None:
    path = heads[f"cats-{family}"]
    nlp = spacy.blank("en")
    nlp.add_pipe("hf_text_classifier", config={"model": path})
    clf = pipeline("text-classification", model=path, top_k=None)
    for doc, expected in zip(nlp.pipe(PLAIN), clf(PLAIN), strict=True):
        assert set(doc.cats) == set(CATS)
        for item in expected:
            assert doc.cats[item["label"]] == pytest.approx(item["score"], abs=1e-4)


def test_multi_label_and_long_docs_average_their_windows(heads: dict) -> None:
    tok = AutoTokenizer.from_pretrained(heads["multi"])
    text = PLAIN[0]
    n = len(tok(text, add_special_tokens=False)["input_ids"])  # exactly one window
    nlp = spacy.blank("en")
    nlp.add_pipe("hf_text_classifier", config={"model": heads["multi"], "window": n, "stride": n})
    pipe = nlp.get_pipe("hf_text_classifier")
    doc = nlp(text)  # never initialized: the model loads at the first prediction
    assert pipe.multi_label
    assert 0 < sum(doc.cats.values()) < len(CATS)  # sigmoids, not a softmax
    clf = pipeline("text-classification", model=heads["multi"], top_k=None)
    for item in clf([text])[0]:
        assert doc.cats[item["label"]] == pytest.approx(item["score"], abs=1e-4)
    long = " ".join([text] * 3)  # three windows
    logits = pipe.model.predict([nlp.make_doc(long)])[0]
    model = pipe.shim.hf_model.eval()
    ids = tok(long, add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 * n
    windows = [ids[i : i + n] for i in range(0, len(ids), n)]
    with torch.no_grad():
        per_window = [
            model(torch.tensor([[tok.cls_token_id, *w, tok.sep_token_id]])).logits[0]
            for w in windows
        ]
    np.testing.assert_allclose(logits, torch.stack(per_window).mean(0).numpy(), atol=1e-5)


def test_save_load_as_plain_hf_directories(heads: dict, tmp_path: Path) -> None:
    never_used = spacy.blank("en")
    never_used.add_pipe("hf_token_classifier", config={"model": heads["ner-bert"]})
    never_used.to_disk(tmp_path / "fresh")  # saving loads the model first
    fresh, direct = spacy.load(tmp_path / "fresh")(PLAIN[0]), token_nlp(heads["ner-bert"])(PLAIN[0])
    assert [(e.start_char, e.label_) for e in fresh.ents] == [
        (e.start_char, e.label_) for e in direct.ents
    ]
    assert (tmp_path / "fresh" / "hf_token_classifier" / "model" / "config.json").is_file()
    nlp = token_nlp(heads["ner-roberta"])
    nlp.add_pipe("hf_text_classifier", config={"model": heads["cats-roberta"]})
    nlp.get_pipe("hf_text_classifier").initialize()
    before = [(d.to_json()["ents"], d.cats) for d in nlp.pipe(PLAIN)]
    nlp.to_disk(tmp_path / "pipe")
    moved = tmp_path / "moved"  # the source models are no longer needed
    shutil.copytree(tmp_path / "pipe", moved)
    shutil.rmtree(tmp_path / "pipe")
    loaded = spacy.load(moved)
    assert [(d.to_json()["ents"], d.cats) for d in loaded.pipe(PLAIN)] == before
    hf_dir = moved / "hf_token_classifier" / "model"
    assert (hf_dir / "model.safetensors").is_file() and not list(hf_dir.glob("*.bin"))
    assert hf_entities(str(hf_dir), PLAIN[0]) == [
        (e.start_char, e.end_char, e.label_) for e in loaded(PLAIN[0]).ents
    ]
    again = spacy.blank("en").from_config(loaded.config)
    again.from_bytes(loaded.to_bytes())
    assert [(d.to_json()["ents"], d.cats) for d in again.pipe(PLAIN)] == before


def test_training_moves_toward_gold_labels(heads: dict) -> None:
    nlp = token_nlp(heads["ner-bert"])
    nlp.add_pipe("hf_text_classifier", config={"model": heads["cats-bert"]})
    nlp.add_pipe("hf_text_classifier", name="multi", config={"model": heads["multi"]})
    words = PLAIN[0].split()
    examples = []
    for text in PLAIN:
        doc = nlp.make_doc(text)
        ents = [f"B-{'PER' if i % 2 else 'LOC'}" if i < 3 else "O" for i in range(len(doc))]
        ref = Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc],
                  ents=ents)  # fmt: skip
        ref.cats = {"joy": 1.0, "anger": 0.0, "fear": 0.0}
        examples.append(Example(doc, ref))
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    first = last = None
    for _ in range(12):
        losses = nlp.update(examples, sgd=optimizer)
        first = first or dict(losses)
        last = losses
    assert last is not None and first is not None and len(words) > 3
    for name in ("hf_token_classifier", "hf_text_classifier", "multi"):
        assert last[name] < 0.5 * first[name]
    scores = nlp.evaluate(examples)
    assert scores["ents_f"] > 0.9
    assert all(max(doc.cats, key=doc.cats.get) == "joy" for doc in nlp.pipe(PLAIN))
    bad = [Example(nlp.make_doc("Anna"), Doc(nlp.vocab, words=["Anna"], ents=["B-MISC"]))]
    with pytest.raises(ValueError, match="not among the model's types"):
        nlp.get_pipe("hf_token_classifier").initialize(lambda: bad)


def test_spacy_package_ships_the_hf_directories(heads: dict, tmp_path: Path) -> None:
    import subprocess
    import sys
    import tarfile

    nlp = token_nlp(heads["ner-bert"])
    nlp.add_pipe("hf_text_classifier", config={"model": heads["cats-bert"]})
    nlp.get_pipe("hf_text_classifier").initialize()
    nlp.meta["name"] = "hf_heads"
    nlp.to_disk(tmp_path / "pipe")
    (tmp_path / "pkg").mkdir()
    cli = [sys.executable, "-m", "spacy", "package", str(tmp_path / "pipe"), str(tmp_path / "pkg"),
           "--version", "0.0.1", "--build", "sdist", "--force"]  # fmt: skip
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (sdist,) = (tmp_path / "pkg").glob("*/dist/*.tar.gz")
    names = tarfile.open(sdist).getnames()
    for component in ("hf_token_classifier", "hf_text_classifier"):
        assert any(n.endswith(f"{component}/model/model.safetensors") for n in names)
    meta = json.loads(next((tmp_path / "pkg").glob("*/meta.json")).read_text())
    assert any(r.startswith("spacy-trf") for r in meta.get("requirements", [])), meta
