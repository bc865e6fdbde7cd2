"""Bad training data, handled as spaCy users expect: an empty corpus and a nan/inf loss stop
with one clear error (the step named, no weight written), while misaligned gold, labels unseen
at init and docs longer than every window train as usual."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
import torch
from spacy.pipeline import Tagger
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from thinc.api import Adam, Config, fix_random_seed

from spacy_trf import NonFiniteLossError
from spacy_trf.encoder import get_shim

from .fixtures_models import build_head

LISTENER = {
    "@architectures": "spacy-trf.TransformerListener.v1",
    "pooling": {"@layers": "reduce_mean.v1"},
}
TAGGER = {"model": {"@architectures": "spacy.Tagger.v2", "tok2vec": LISTENER}}
SENTS = [
    ("the cat sat on a mat", ["DT", "NN", "VB", "IN", "DT", "NN"]),
    ("a dog ran to the park", ["DT", "NN", "VB", "IN", "DT", "NN"]),
]


def tagger_nlp(path: str, **model: Any) -> spacy.Language:
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"model": {"name": path, **model}})
    nlp.add_pipe("tagger", config=TAGGER)
    return nlp


def tag_examples(nlp: spacy.Language, data: list[tuple[str, list[str]]] = SENTS) -> list[Example]:
    return [Example.from_dict(nlp.make_doc(text), {"tags": tags}) for text, tags in data]


def weights(nlp: spacy.Language, name: str = "trf") -> dict[str, torch.Tensor]:
    pipe: Any = nlp.get_pipe(name)
    shim = pipe.shim if hasattr(pipe, "shim") else get_shim(pipe.model)
    return {k: v.clone() for k, v in shim.hf_model.state_dict().items()}


def poison_loss(monkeypatch: pytest.MonkeyPatch, cls: type, at_call: int, value: float) -> None:
    """From its ``at_call``-th call on, ``cls.get_loss`` returns ``value`` as the loss and in
    the gradient, as a diverging model or a broken example would."""
    original, calls = cls.get_loss, [0]

    def get_loss(self: Any, examples: Any, scores: Any) -> tuple[float, Any]:
        loss, grads = original(self, examples, scores)
        calls[0] += 1
        if calls[0] < at_call:
            return loss, grads
        bad = [g * value for g in grads] if isinstance(grads, list) else grads * value
        return (value if np.isnan(value) else loss), bad

    monkeypatch.setattr(cls, "get_loss", get_loss)


# An empty corpus --------------------------------------------------------------------------------


def test_empty_corpus_is_one_clear_error(model_dirs: dict[str, str], tmp_path: Path) -> None:
    nlp = tagger_nlp(model_dirs["roberta"])
    with pytest.raises(ValueError, match="'trf' got no training examples.*paths.train"):
        nlp.initialize(lambda: [])
    head = build_head(model_dirs["roberta"], tmp_path / "head", ["DT", "NN"])
    hf = spacy.blank("en")
    hf.add_pipe("hf_token_classifier", config={"model": head, "annotate": "tag"})
    with pytest.raises(ValueError, match="'hf_token_classifier' got no training examples"):
        hf.initialize(lambda: iter([]))
    hf.initialize()  # without a corpus: nothing to check


def test_spacy_train_on_an_empty_corpus_names_the_fix(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    from spacy.cli.train import train

    from spacy_trf.cli.init_config import make_config

    config = Config(make_config(["tagger"], model=model_dirs["roberta"], max_steps=2))
    config.to_disk(tmp_path / "config.cfg")
    DocBin().to_disk(tmp_path / "empty.spacy")
    empty = str(tmp_path / "empty.spacy")
    with pytest.raises(ValueError, match="training corpus is empty"):
        train(tmp_path / "config.cfg", overrides={"paths.train": empty, "paths.dev": empty})


# A nan or inf loss ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_loss_stops_at_its_step_before_writing_weights(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch, value: float
) -> None:
    nlp = tagger_nlp(model_dirs["roberta"])
    egs = tag_examples(nlp)
    nlp.initialize(lambda: egs)
    poison_loss(monkeypatch, Tagger, at_call=3, value=value)
    optimizer = Adam(0.001)
    for _ in range(2):
        nlp.update(egs, sgd=optimizer)
    before, tagger_before = weights(nlp), nlp.get_pipe("tagger").model.get_ref("softmax")
    softmax = tagger_before.get_param("W").copy()
    # The listener's gradient reaches the encoder before spaCy adds the loss to ``losses``.
    what = r"gradient of 'trf''s transformer has nan or inf values \(from the losses of 'tagger'\)"
    with pytest.raises(NonFiniteLossError, match=f"step 2 of 'trf' .*: the {what}.*grad_clip"):
        nlp.update(egs, sgd=optimizer)
    after = weights(nlp)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(tagger_before.get_param("W"), softmax)


def test_large_finite_gradients_are_not_mistaken_for_nan(model_dirs: dict[str, str]) -> None:
    nlp = tagger_nlp(model_dirs["roberta"])
    nlp.initialize(lambda: tag_examples(nlp))
    shim = get_shim(nlp.get_pipe("trf").model)
    params = list(shim.hf_model.parameters())
    for p in params:
        p.grad = torch.full_like(p, 1e30)  # the sum of squares would overflow
    assert shim.gradients_finite()
    params[0].grad.view(-1)[0] = float("nan")
    assert not shim.gradients_finite()
    shim.drop_gradients()
    assert all(p.grad is None for p in params) and shim.gradients_finite()


def test_spacy_train_stops_at_a_nan_loss_and_keeps_finite_weights(
    model_dirs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spacy.cli.train import train

    from spacy_trf.cli.init_config import make_config

    config = Config(make_config(["tagger"], model=model_dirs["roberta"], max_steps=20))
    config["training"].update(eval_frequency=100, accumulate_gradient=1)
    config.to_disk(tmp_path / "config.cfg")
    nlp = spacy.blank("en")
    DocBin(docs=[eg.reference for eg in tag_examples(nlp) * 4]).to_disk(tmp_path / "t.spacy")
    data = str(tmp_path / "t.spacy")
    poison_loss(monkeypatch, Tagger, at_call=4, value=float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 3 of 'trf'"):
        paths = {"paths.train": data, "paths.dev": data}
        train(tmp_path / "config.cfg", tmp_path / "out", overrides=paths)
    saved = spacy.load(tmp_path / "out" / "model-last")  # spaCy saves it when training stops
    assert all(torch.isfinite(v).all() for v in weights(saved).values())
    assert np.isfinite(saved.get_pipe("tagger").model.get_ref("softmax").get_param("W")).all()


def test_hf_head_stops_at_a_nan_loss(
    model_dirs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spacy_trf.pipeline import HFTokenClassifierPipe

    head = build_head(model_dirs["roberta"], tmp_path / "head", ["DT", "NN", "VB", "IN"])
    nlp = spacy.blank("en")
    nlp.add_pipe("hf_token_classifier", config={"model": head, "annotate": "tag"})
    egs = tag_examples(nlp)
    nlp.initialize(lambda: egs)
    poison_loss(monkeypatch, HFTokenClassifierPipe, at_call=2, value=float("nan"))
    optimizer = nlp.create_optimizer()
    nlp.update(egs, sgd=optimizer)
    before = weights(nlp, "hf_token_classifier")
    with pytest.raises(NonFiniteLossError, match="step 1 of 'hf_token_classifier'"):
        nlp.update(egs, sgd=optimizer)
    after = weights(nlp, "hf_token_classifier")
    assert all(torch.equal(before[k], after[k]) for k in before)


# Misaligned gold, labels unseen at init, docs longer than every window -------------------------


def test_gold_with_other_tokens_trains_through_spacys_alignment(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    nlp = tagger_nlp(model_dirs["roberta"])
    # The gold docs merge "New York" and split "can't" differently than the tokenizer does.
    refs = [
        Doc(nlp.vocab, words=["New York", "is", "big"], tags=["NNP", "VB", "JJ"]),
        Doc(
            nlp.vocab,
            words=["we", "ca", "n't", "go"],
            spaces=[True, False, True, False],
            tags=["PRP", "MD", "RB", "VB"],
        ),  # fmt: skip
    ]
    egs = [Example(nlp.make_doc(ref.text), ref) for ref in refs]
    assert [len(eg.predicted) for eg in egs] == [4, 4]
    nlp.initialize(lambda: egs)
    optimizer = Adam(0.005)
    losses = [nlp.update(egs, sgd=optimizer)["tagger"] for _ in range(15)]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    doc = nlp("New York is big")
    assert [t.tag_ for t in doc][2:] == ["VB", "JJ"]  # the aligned tokens learned their tags

    head = build_head(model_dirs["roberta"], tmp_path / "head", ["NNP", "VB", "JJ", "PRP", "MD"])
    hf = spacy.blank("en")
    hf.add_pipe("hf_token_classifier", config={"model": head, "annotate": "tag"})
    hf_egs = [Example(hf.make_doc(ref.text), ref) for ref in refs[:1]]
    hf.initialize(lambda: hf_egs)
    optimizer = hf.create_optimizer()
    hf_losses = [hf.update(hf_egs, sgd=optimizer)["hf_token_classifier"] for _ in range(10)]
    assert np.isfinite(hf_losses).all() and hf_losses[-1] < hf_losses[0]


def test_labels_unseen_at_init(model_dirs: dict[str, str], tmp_path: Path) -> None:
    nlp = tagger_nlp(model_dirs["roberta"])
    egs = tag_examples(nlp)
    nlp.initialize(lambda: egs)
    # Dev labels the tagger never saw are scored as errors, as spaCy's tagger does.
    dev = [Example.from_dict(nlp.make_doc("the cat sat"), {"tags": ["DT", "NEW", "VB"]})]
    scores = nlp.evaluate(dev)
    assert scores["tag_acc"] is not None and scores["tag_acc"] <= 2 / 3
    # A fine-tuned head keeps its label set: new training labels are refused at initialize.
    head = build_head(model_dirs["roberta"], tmp_path / "head", ["DT", "NN"])
    hf = spacy.blank("en")
    hf.add_pipe("hf_token_classifier", config={"model": head, "annotate": "tag"})
    with pytest.raises(ValueError, match=r"tag labels the model .* lacks: \['IN', 'VB'\]"):
        hf.initialize(lambda: tag_examples(hf))


def test_doc_longer_than_every_window_trains(model_dirs: dict[str, str]) -> None:
    nlp = tagger_nlp(model_dirs["roberta"], window=16, stride=12)
    text, tags = SENTS[0]
    long_doc = (" ".join([text] * 40), tags * 40)  # 240 words: many windows
    egs = tag_examples(nlp, [long_doc, SENTS[1]])
    nlp.initialize(lambda: egs)
    optimizer = Adam(0.005)
    losses = [nlp.update(egs, sgd=optimizer)["tagger"] for _ in range(10)]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    doc = nlp(long_doc[0])
    assert len(doc._.trf.window_ranges) > 10
    right = np.array([t.tag_ for t in doc]) == np.array(long_doc[1])
    assert right.mean() > 0.9 and right[-40:].mean() > 0.8  # the last windows learned too
