"""Training through the trf component: every kind of head learns, gradients reach (or, when
frozen, never reach) the encoder, listeners share one backward, and trained pipelines round-trip.
"""

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
import torch
from spacy.training import Example
from thinc.api import Adam, chain, fix_random_seed
from thinc.api import registry as thinc_registry

from spacy_trf.encoder import HFShim, encoder_options, get_shim
from spacy_trf.encoder import forward as forward_module
from spacy_trf.pooling import EncoderRows, TokenPooler
from spacy_trf.stitch import RowsGradient

Annotations = dict[str, Any]

# Four short sentences, annotated for every kind of head. Entity offsets are checked below.
DATA: list[tuple[str, Annotations]] = [
    (
        "Apple buys a startup in London .",
        {
            "tags": ["PROPN", "VERB", "DET", "NOUN", "ADP", "PROPN", "PUNCT"],
            "heads": [1, 1, 3, 1, 1, 4, 1],
            "deps": ["nsubj", "ROOT", "det", "dobj", "prep", "pobj", "punct"],
            "ents": [(0, 5, "ORG"), (24, 30, "GPE")],
            "cats": {"BIZ": 1.0, "SPORT": 0.0},
        },
    ),
    (
        "The team won the final match .",
        {
            "tags": ["DET", "NOUN", "VERB", "DET", "ADJ", "NOUN", "PUNCT"],
            "heads": [1, 2, 2, 5, 5, 2, 2],
            "deps": ["det", "nsubj", "ROOT", "det", "amod", "dobj", "punct"],
            "ents": [],
            "cats": {"BIZ": 0.0, "SPORT": 1.0},
        },
    ),
    (
        "Google hired ten people in Paris .",
        {
            "tags": ["PROPN", "VERB", "NUM", "NOUN", "ADP", "PROPN", "PUNCT"],
            "heads": [1, 1, 3, 1, 1, 4, 1],
            "deps": ["nsubj", "ROOT", "nummod", "dobj", "prep", "pobj", "punct"],
            "ents": [(0, 6, "ORG"), (27, 32, "GPE")],
            "cats": {"BIZ": 1.0, "SPORT": 0.0},
        },
    ),
    (
        "Our runners lost a close race .",
        {
            "tags": ["PRON", "NOUN", "VERB", "DET", "ADJ", "NOUN", "PUNCT"],
            "heads": [1, 2, 2, 5, 5, 2, 2],
            "deps": ["poss", "nsubj", "ROOT", "det", "amod", "dobj", "punct"],
            "ents": [],
            "cats": {"BIZ": 0.0, "SPORT": 1.0},
        },
    ),
]
TEXTS = [text for text, _ in DATA]
POOLINGS = ["reduce_mean.v1", "reduce_first.v1", "reduce_last.v1", "reduce_max.v1"]


def listener(pooling: str = "reduce_mean.v1", **settings: Any) -> dict[str, Any]:
    return {
        "@architectures": "spacy-trf.TransformerListener.v1",
        "pooling": {"@layers": pooling},
        **settings,
    }


OUTPUT_LISTENER = {"@architectures": "spacy-trf.TransformerOutputListener.v1"}


def tagger(tok2vec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": {"@architectures": "spacy.Tagger.v2", "tok2vec": tok2vec or listener()}}


def transition(state: str, tok2vec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "@architectures": "spacy.TransitionBasedParser.v2",
        "state_type": state,
        "extra_state_tokens": False,
        "hidden_width": 32,
        "maxout_pieces": 2,
        "use_upper": True,
        "tok2vec": tok2vec or listener("reduce_first.v1"),
    }


def textcat(exclusive: bool) -> dict[str, Any]:
    return {
        "model": {
            "@architectures": "spacy-trf.TransformerTextCat.v1",
            "exclusive_classes": exclusive,
            "tok2vec": OUTPUT_LISTENER,
        }
    }


COMPONENTS: dict[str, dict[str, Any]] = {
    "tagger": tagger(),
    "morphologizer": tagger(),  # the same model architecture, over POS + features
    # min_action_freq=1: spaCy backs rarer labels off to "dep" (no gold move on tiny data).
    "parser": {"model": transition("parser"), "min_action_freq": 1},
    "ner": {"model": transition("ner")},
    "spancat": {
        "spans_key": "sc",
        "suggester": {"@misc": "spacy.ngram_suggester.v1", "sizes": [1, 2]},
        "model": {
            "@architectures": "spacy.SpanCategorizer.v1",
            "tok2vec": listener(),
            "reducer": {"@layers": "spacy.mean_max_reducer.v1", "hidden_size": 32},
            "scorer": {"@layers": "spacy.LinearLogistic.v1"},
        },
    },
    "textcat": textcat(exclusive=True),
    "textcat_multilabel": textcat(exclusive=False),
}


def gold(component: str, ann: Annotations) -> dict[str, Any]:
    """The annotations a component of this kind learns from."""
    if component == "tagger":
        return {"tags": ann["tags"]}
    if component == "morphologizer":
        morphs = ["Number=Sing" if t in ("NOUN", "PROPN") else "" for t in ann["tags"]]
        return {"pos": ann["tags"], "morphs": morphs}
    if component == "parser":
        return {"heads": ann["heads"], "deps": ann["deps"]}
    if component == "ner":
        return {"entities": ann["ents"]}
    if component == "spancat":
        return {"spans": {"sc": ann["ents"]}}
    if component == "textcat":
        return {"cats": ann["cats"]}
    if component == "textcat_multilabel":
        return {"cats": {**ann["cats"], "PLACE": float(any(e[2] == "GPE" for e in ann["ents"]))}}
    raise KeyError(component)


def examples(nlp: spacy.Language, data: list[tuple[str, Annotations]] = DATA) -> list[Example]:
    egs = []
    for text, ann in data:
        doc = nlp.make_doc(text)
        merged: dict[str, Any] = {}
        for name in nlp.pipe_names:
            if name in COMPONENTS:
                merged.update(gold(name, ann))
        egs.append(Example.from_dict(doc, merged))
    return egs


def build(
    path: str | None,
    components: dict[str, dict[str, Any]],
    data: list[tuple[str, Annotations]] = DATA,
    **trf_config: Any,
) -> tuple[spacy.Language, list[Example]]:
    """trf (over the model at ``path``, unless None) + components, initialized on ``data``."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    if path is not None:
        model_cfg = {"name": path, **trf_config.pop("model", {})}
        nlp.add_pipe("trf", config={"model": model_cfg, **trf_config})
    for name, config in components.items():
        nlp.add_pipe(name, config=config)
    egs = examples(nlp, data)
    nlp.initialize(lambda: egs)
    return nlp, egs


def train(
    nlp: spacy.Language, egs: list[Example], steps: int, lr: float = 0.005, **kwargs: Any
) -> dict[str, list[float]]:
    """nlp.update ``steps`` times; the losses of each component, step by step."""
    fix_random_seed(1)
    optimizer = Adam(lr)
    history: dict[str, list[float]] = {}
    for _ in range(steps):
        losses: dict[str, float] = {}
        nlp.update(egs, sgd=optimizer, drop=0.0, losses=losses, **kwargs)
        for name, loss in losses.items():
            history.setdefault(name, []).append(float(loss))
    return history


def encoder(nlp: spacy.Language, name: str = "trf") -> torch.nn.Module:
    return get_shim(nlp.get_pipe(name).model).hf_model


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    now = module.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, now[k])}


def no_dropout(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def count_backward(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the encoder's backward passes into its weights (one entry per pass)."""
    calls: list[int] = []
    original = HFShim.backward

    def counting(self: HFShim, tensors: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        if tensors:
            calls.append(1)
        original(self, tensors, grads)

    monkeypatch.setattr(HFShim, "backward", counting)
    return calls


def count_forward(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def encoder_rows(model: Any) -> Any:
    return next(node for node in model.walk() if node.name == "spacy-trf.EncoderRows")


def tagger_scores(nlp: spacy.Language, texts: list[str] = TEXTS) -> list[np.ndarray]:
    docs = list(nlp.pipe(texts, disable=["tagger"]))
    return [np.asarray(s) for s in nlp.get_pipe("tagger").model.predict(docs)]


def predictions(nlp: spacy.Language, texts: list[str] = TEXTS) -> list[dict[str, Any]]:
    out = []
    for doc in nlp.pipe(texts):
        out.append(
            {
                "tags": [t.tag_ for t in doc],
                "ents": [(e.start_char, e.end_char, e.label_) for e in doc.ents],
                "cats": dict(doc.cats),
            }
        )
    return out


def assert_same_predictions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x["tags"] == y["tags"]
        assert x["ents"] == y["ents"]
        assert x["cats"].keys() == y["cats"].keys()
        assert np.allclose(list(x["cats"].values()), list(y["cats"].values()), atol=1e-5)


def test_entity_offsets_match_the_text() -> None:
    nlp = spacy.blank("en")
    for text, ann in DATA:
        doc = nlp.make_doc(text)
        assert len(doc) == len(ann["tags"]) == len(ann["heads"])
        for start, end, _ in ann["ents"]:
            assert doc.char_span(start, end) is not None, (text, start, end)


# 1. Every kind of head learns through a listener ------------------------------------------------


@pytest.mark.parametrize("component", list(COMPONENTS))
def test_head_learns_through_listener(model_dirs: dict[str, str], component: str) -> None:
    nlp, egs = build(model_dirs["roberta"], {component: COMPONENTS[component]})
    assert nlp.get_pipe("trf").listening_components == [component]
    losses = train(nlp, egs, steps=12)[component]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


# 2. Gradients reach the encoder; a frozen encoder is left alone ---------------------------------


def test_updates_reach_every_encoder_weight(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()})
    hf = encoder(nlp)
    before = snapshot(hf)
    calls = count_backward(monkeypatch)
    train(nlp, egs, steps=3)
    assert len(calls) == 3
    # Everything that feeds last_hidden_state moves; the unused pooler head does not.
    expected = {k for k in before if not k.startswith("pooler.")}
    assert changed(hf, before) == expected


def test_frozen_encoder_is_never_updated_but_heads_learn(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()}, frozen=True)
    hf = encoder(nlp)
    before = snapshot(hf)
    calls = count_backward(monkeypatch)
    losses = train(nlp, egs, steps=12, lr=0.01)["tagger"]
    assert calls == []
    assert changed(hf, before) == set()
    assert all(p.grad is None for p in hf.parameters())
    assert losses[-1] < 0.7 * losses[0], losses


# 3. grad_factor ---------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.0, 1.0])
def test_grad_factor_gates_the_encoder_gradient(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch, factor: float
) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger(listener(grad_factor=factor))})
    hf = encoder(nlp)
    before = snapshot(hf)
    calls = count_backward(monkeypatch)
    losses = train(nlp, egs, steps=3, lr=0.01)["tagger"]
    assert losses[-1] < losses[0]
    if factor == 0.0:
        assert calls == [] and changed(hf, before) == set()
    else:
        assert len(calls) == 3 and changed(hf, before)


def test_grad_factor_schedule_freezes_then_unfreezes(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule = {
        "@schedules": "constant_then.v1",
        "rate": 0.0,
        "steps": 2,
        "schedule": {"@schedules": "constant.v1", "rate": 1.0},
    }
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger(listener(grad_factor=schedule))})
    hf = encoder(nlp)
    before = snapshot(hf)
    calls = count_backward(monkeypatch)
    optimizer = Adam(0.01)
    for _ in range(2):
        nlp.update(egs, sgd=optimizer, drop=0.0)
    assert calls == [] and changed(hf, before) == set()
    nlp.update(egs, sgd=optimizer, drop=0.0)
    assert len(calls) == 1 and changed(hf, before)


# 4. Layer mixes ---------------------------------------------------------------------------------


def test_scalar_mix_weights_are_learned(model_dirs: dict[str, str]) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger(listener(layers="scalar_mix"))})
    trf = nlp.get_pipe("trf")
    assert encoder_options(trf.model).output_hidden_states is True
    mix = encoder_rows(nlp.get_pipe("tagger").model)
    n_layers = encoder(nlp).config.num_hidden_layers + 1
    weights = mix.get_param("weights").copy()
    assert weights.shape == (n_layers,) and not weights.any()
    losses = train(nlp, egs, steps=5, lr=0.01)["tagger"]
    assert losses[-1] < losses[0]
    assert np.abs(mix.get_param("weights") - weights).max() > 1e-4
    out = nlp(TEXTS[0])._.trf
    assert out.hidden_states is not None and len(out.hidden_states) == n_layers
    assert out.special_hidden_states is not None and len(out.special_hidden_states) == n_layers


def test_scalar_mix_gradient_matches_finite_differences(model_dirs: dict[str, str]) -> None:
    nlp, _ = build(model_dirs["roberta"], {}, model={"output_hidden_states": True})
    outputs = [doc._.trf for doc in nlp.pipe(TEXTS[:2])]
    mix = EncoderRows("scalar_mix", layer_dropout=0.0)
    mix.initialize(X=outputs)
    rng = np.random.default_rng(0)
    mix.set_param("weights", rng.normal(size=mix.get_param("weights").shape).astype("f"))
    mix.set_param("scale", np.asarray([1.3], dtype="f"))
    d_pieces = [rng.normal(size=o.last_hidden_state.shape).astype("f") for o in outputs]
    d_specials = [rng.normal(size=o.special_hidden_state.shape).astype("f") for o in outputs]

    def loss() -> float:
        rows = mix.predict(outputs)
        return float(
            sum(
                (r.pieces.astype("d") * d).sum() + (r.specials.astype("d") * s).sum()
                for r, d, s in zip(rows, d_pieces, d_specials, strict=True)
            )
        )

    _, backprop = mix.begin_update(outputs)
    backprop([RowsGradient(d, s) for d, s in zip(d_pieces, d_specials, strict=True)])
    for name in ("weights", "scale"):
        analytic = mix.get_grad(name).copy()
        numeric = np.zeros_like(analytic)
        base = mix.get_param(name).copy()
        for i in range(len(base)):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[i] += sign * 1e-2
                mix.set_param(name, shifted)
                numeric[i] += sign * loss() / 2e-2
        mix.set_param(name, base)
        np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=2e-2, err_msg=name)


def test_listed_layers_are_averaged(model_dirs: dict[str, str]) -> None:
    nlp, egs = build(model_dirs["xlmr"], {"tagger": tagger(listener(layers=[-1, -2]))})
    assert encoder_options(nlp.get_pipe("trf").model).output_hidden_states is True
    losses = train(nlp, egs, steps=8, lr=0.01)["tagger"]
    assert losses[-1] < 0.7 * losses[0], losses
    doc = nlp(TEXTS[2])
    rows = nlp.get_pipe("tagger").model.get_ref("tok2vec").predict([doc])[0]
    out = doc._.trf
    layer = (out.hidden_states[-1] + out.hidden_states[-2]) / 2
    expected = np.stack([layer[out.token_pieces(t.i)].mean(0) for t in doc])
    np.testing.assert_allclose(rows, expected, atol=1e-5)


# 5. Pooling over tokens without pieces ----------------------------------------------------------

WHITESPACE_DATA: list[tuple[str, Annotations]] = [
    ("Hello  \n world", {"tags": ["INTJ", "_SP", "NOUN"]}),
    ("Fine  day .", {"tags": ["ADJ", "_SP", "NOUN", "PUNCT"]}),
    ("   ", {"tags": ["_SP"]}),
    ("", {"tags": []}),
]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_gives_whitespace_tokens_a_zero_row(
    model_dirs: dict[str, str], pooling: str
) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger(listener(pooling))}, WHITESPACE_DATA)
    doc = nlp.make_doc("Hello  \n world")
    assert [t.is_space for t in doc] == [False, True, False]
    losses = train(nlp, egs, steps=3, lr=0.01)["tagger"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    doc = nlp("Hello  \n world")
    assert doc._.trf.align.lengths.tolist()[1] == 0
    rows = nlp.get_pipe("tagger").model.get_ref("tok2vec").predict([doc])[0]
    assert not rows[1].any()
    assert (np.abs(rows[[0, 2]]).sum(1) > 0).all()

    # The gradient sent for a whitespace token's row goes nowhere.
    pooler = chain(EncoderRows(), TokenPooler(thinc_registry.layers.get(pooling)()))
    outputs = [doc._.trf, nlp.get_pipe("trf")(nlp.make_doc("   "))._.trf]
    pooler.initialize(X=outputs)
    Y, backprop = pooler.begin_update(outputs)
    assert [y.shape[0] for y in Y] == [3, 1]
    rng = np.random.default_rng(0)
    dY = [rng.normal(size=y.shape).astype("f") for y in Y]
    base = backprop(dY)
    dY[0][1] += 100.0
    dY[1][0] += 100.0
    again = backprop(dY)
    np.testing.assert_array_equal(base[0].d_last_hidden_state, again[0].d_last_hidden_state)
    assert base[0].d_last_hidden_state.any()
    assert again[1].d_last_hidden_state is None or not again[1].d_last_hidden_state.any()


def test_batch_of_only_whitespace_tokens(model_dirs: dict[str, str]) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()}, WHITESPACE_DATA)
    outputs = [nlp.get_pipe("trf")(nlp.make_doc(" \n "))._.trf]
    assert outputs[0].align.lengths.tolist() == [0]
    for pooling in POOLINGS:
        pooler = chain(EncoderRows(), TokenPooler(thinc_registry.layers.get(pooling)()))
        pooler.initialize(X=outputs)
        rows = pooler.predict(outputs)
        assert rows[0].shape == (1, outputs[0].width) and not rows[0].any(), pooling
    assert len(nlp("   ")) == 1
    whitespace_only = [eg for eg in egs if len(eg.reference) and eg.reference[0].is_space]
    nlp.update(whitespace_only, sgd=Adam(0.001))


# 6. Two listeners, one encoder ------------------------------------------------------------------


def test_two_listeners_share_one_backward_and_sum_their_gradients(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nlp, egs = build(
        model_dirs["roberta"], {"tagger": tagger(), "ner": {"model": transition("ner")}}
    )
    trf = nlp.get_pipe("trf")
    assert trf.listening_components == ["tagger", "ner"]
    train(nlp, egs, steps=2, lr=0.01)  # the heads' output layers start at zero: no gradient
    hf = encoder(nlp)
    no_dropout(hf)
    shim_id = get_shim(trf.model).id
    calls = count_backward(monkeypatch)

    def encoder_gradient(**update: Any) -> dict[str, np.ndarray]:
        """The gradient the encoder's optimizer step sees, for one batch; no weight changes."""
        seen: dict[str, np.ndarray] = {}

        def record(key: Any, param: Any, grad: Any) -> tuple[Any, Any]:
            if key[0] == shim_id:
                seen[key[1]] = np.array(grad, copy=True)
            return param, grad

        fix_random_seed(0)
        nlp.update(egs, sgd=False, drop=0.0, **update)
        trf.finish_update(record)  # type: ignore[arg-type]
        return seen

    both = encoder_gradient()
    assert len(calls) == 1
    tagger_only = encoder_gradient(exclude=["ner"])
    ner_only = encoder_gradient(exclude=["tagger"])
    assert len(calls) == 3
    assert both.keys() == tagger_only.keys() == ner_only.keys() and len(both) > 10
    assert any(np.abs(tagger_only[k]).max() > 0 for k in both)
    assert any(np.abs(ner_only[k]).max() > 0 for k in both)
    for key, grad in both.items():
        np.testing.assert_allclose(
            grad, tagger_only[key] + ner_only[key], rtol=1e-3, atol=1e-6, err_msg=key
        )

    # With an optimizer: still one backward per batch, within nlp.update.
    calls.clear()
    nlp.update(egs, sgd=Adam(0.001), drop=0.0)
    assert len(calls) == 1


# 7. replace_listeners ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_an_owned_encoder_takes_learn_rate_scale(model_dirs: dict[str, str], scale: float) -> None:
    """Tok2VecTransformer.v2 (a component's own encoder) sets the encoder options the trf
    component has: learn_rate_scale 0 keeps its weights while the head learns."""
    own = {
        "@architectures": "spacy-trf.Tok2VecTransformer.v2",
        "name": model_dirs["roberta"],
        "get_spans": {"@span_getters": "spacy-trf.doc_spans.v1"},
        "pooling": {"@layers": "reduce_mean.v1"},
        "learn_rate_scale": scale,
        "max_batch_pieces": 256,
    }
    nlp, egs = build(None, {"tagger": tagger(own)})
    encoder_node = next(n for n in nlp.get_pipe("tagger").model.walk() if n.shims)
    assert encoder_options(encoder_node).max_batch_pieces == 256
    hf = get_shim(encoder_node).hf_model
    before = snapshot(hf)
    losses = train(nlp, egs, steps=3)["tagger"]
    assert losses[-1] < losses[0]
    assert bool(changed(hf, before)) is (scale > 0)


def test_replace_listeners_gives_the_tagger_its_own_encoder(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()})
    train(nlp, egs, steps=3)
    before = tagger_scores(nlp)
    nlp.replace_listeners("trf", "tagger", ["model.tok2vec"])
    trf = nlp.get_pipe("trf")
    assert trf.listening_components == []
    t2v = nlp.config["components"]["tagger"]["model"]["tok2vec"]
    assert t2v["@architectures"] == "spacy-trf.Tok2VecTransformer.v2"
    assert t2v["name"] == model_dirs["roberta"]
    for key in ("max_batch_pieces", "learn_rate_scale", "mixed_precision"):
        assert t2v[key] == trf.cfg[key]  # the trf component's encoder options come along
    assert t2v["pooling"] == {"@layers": "reduce_mean.v1"}
    for a, b in zip(before, tagger_scores(nlp), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)

    own = next(n for n in nlp.get_pipe("tagger").model.walk() if n.shims)
    own_hf = get_shim(own).hf_model
    assert own_hf is not encoder(nlp)
    before_own = snapshot(own_hf)
    losses = train(nlp, egs, steps=3)["tagger"]
    assert losses[-1] < losses[0]
    assert changed(own_hf, before_own)

    expected = predictions(nlp)
    scores = tagger_scores(nlp)
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("trf").listening_components == []
    assert_same_predictions(expected, predictions(loaded))
    for a, b in zip(scores, tagger_scores(loaded), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("case", ["replace_listeners", "grad_factor_drops_to_zero"])
def test_encoder_without_gradient_stays_put_after_training(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    if case == "replace_listeners":
        nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()})
    else:
        schedule = {
            "@schedules": "constant_then.v1",
            "rate": 1.0,
            "steps": 2,
            "schedule": {"@schedules": "constant.v1", "rate": 0.0},
        }
        nlp, egs = build(model_dirs["roberta"], {"tagger": tagger(listener(grad_factor=schedule))})
    optimizer = Adam(0.01)
    for _ in range(2):
        nlp.update(egs, sgd=optimizer, drop=0.0)
    if case == "replace_listeners":
        nlp.replace_listeners("trf", "tagger", ["model.tok2vec"])
    shared = encoder(nlp)
    before = snapshot(shared)
    calls = count_backward(monkeypatch)
    for _ in range(2):
        nlp.update(egs, sgd=optimizer, drop=0.0)
    # No backward reached the shared encoder (after replace_listeners the tagger's own does one).
    assert len(calls) == (2 if case == "replace_listeners" else 0)
    assert changed(shared, before) == set()


# 8. A listener without its encoder --------------------------------------------------------------


@pytest.mark.parametrize("how", ["select_pipes", "disable_pipe"])
def test_listener_without_encoder_output_is_a_clear_error(
    model_dirs: dict[str, str], how: str
) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger(), "textcat": textcat(True)})
    train(nlp, egs, steps=1)
    if how == "select_pipes":
        nlp.select_pipes(disable="trf")
    else:
        nlp.disable_pipe("trf")
    with pytest.raises(ValueError, match=r"doc\._\.trf"):
        nlp("Apple buys a startup .")
    for name in ("tagger", "textcat"):
        with pytest.raises(ValueError, match=r"doc\._\.trf"):
            nlp.get_pipe(name).predict([nlp.make_doc("Apple buys a startup .")])


@pytest.mark.parametrize("frozen", [False, True])
def test_training_a_listener_without_its_encoder_is_a_clear_error(
    model_dirs: dict[str, str], frozen: bool
) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()}, frozen=frozen)
    # Other docs with the same numbers of tokens: only doc._.trf (None) tells them apart.
    other = examples(nlp, [(t.replace("a", "o"), ann) for t, ann in DATA])
    optimizer = Adam(0.001)
    for _ in range(3):
        nlp.update(egs, sgd=optimizer)
        with nlp.select_pipes(disable="trf"):
            with pytest.raises(ValueError, match=r"doc\._\.trf"):
                nlp.update(other, sgd=optimizer)


# 9. Frozen encoder with an output cache ---------------------------------------------------------


def test_frozen_cache_skips_the_encoder_on_repeated_docs(model_dirs: dict[str, str]) -> None:
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()}, frozen=True, feature_cache_mb=8)
    trf = nlp.get_pipe("trf")
    forwards = count_forward(encoder(nlp))
    train(nlp, egs, steps=1, lr=0.01)
    hits, first_forwards = trf.cache.hits, len(forwards)
    assert first_forwards >= 1 and len(trf.cache) == len(TEXTS)
    losses = train(nlp, egs, steps=3, lr=0.01)["tagger"]
    assert len(forwards) == first_forwards
    assert trf.cache.hits == hits + 3 * len(TEXTS)
    assert losses[-1] < losses[0]

    first = [doc._.trf for doc in nlp.pipe(TEXTS)]
    assert len(forwards) == first_forwards
    second = [doc._.trf for doc in nlp.pipe(TEXTS)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.last_hidden_state, b.last_hidden_state)
    # The cached outputs are what the encoder computes.
    fresh, _ = build(model_dirs["roberta"], {}, frozen=True)
    for a, doc in zip(first, fresh.pipe(TEXTS), strict=True):
        np.testing.assert_allclose(a.last_hidden_state, doc._.trf.last_hidden_state, atol=1e-6)
        np.testing.assert_allclose(
            a.special_hidden_state, doc._.trf.special_hidden_state, atol=1e-6
        )


def test_frozen_cache_respects_its_memory_bound(model_dirs: dict[str, str]) -> None:
    texts = [f"Sentence number {i} is short ." for i in range(8)]
    probe, _ = build(model_dirs["roberta"], {}, frozen=True, feature_cache_mb=8)
    list(probe.pipe(texts))
    sizes = probe.get_pipe("trf").cache.nbytes / len(texts)
    mb = 2.5 * sizes / 2**20
    nlp, _ = build(model_dirs["roberta"], {}, frozen=True, feature_cache_mb=mb)
    cache = nlp.get_pipe("trf").cache
    forwards = count_forward(encoder(nlp))
    for text in texts:
        nlp(text)
        assert cache.nbytes <= cache.max_bytes
    assert 1 <= len(cache) <= 2
    assert len(forwards) == len(texts)
    nlp(texts[-1])  # the most recent doc is kept
    assert len(forwards) == len(texts)
    nlp(texts[0])  # the oldest was evicted
    assert len(forwards) == len(texts) + 1
    assert cache.nbytes <= cache.max_bytes
    copied = pickle.loads(pickle.dumps(cache))  # as n_process and Ray workers get it
    assert (len(copied), copied.nbytes, copied.max_bytes) == (0, 0, cache.max_bytes)
    copied.put(b"k", next(iter(cache._items.values()))[0])
    assert len(copied) == 1 and len(cache) > 0


def test_frozen_cache_counts_all_the_memory_it_keeps(model_dirs: dict[str, str]) -> None:
    # Outputs are rows of the batch's arrays; a cache of views would keep whole batches alive.
    texts = [f"Sentence number {i} is short ." for i in range(8)]
    nlp, _ = build(model_dirs["roberta"], {}, frozen=True, feature_cache_mb=8)
    docs = list(nlp.pipe(texts, batch_size=8))
    cache = nlp.get_pipe("trf").cache
    assert len(cache) == len(texts)
    for doc, (out, _) in zip(docs, cache._items.values(), strict=True):
        assert doc._.trf is out
    cache.max_bytes = cache.nbytes // 3  # room for the last two docs of the next batch
    cache.clear()
    list(nlp.pipe(texts[::-1], batch_size=8))
    kept = [out for out, _ in cache._items.values()]

    def memory(a: np.ndarray) -> np.ndarray:  # the array that holds a view's memory
        return a if not isinstance(a.base, np.ndarray) else memory(a.base)

    held = {
        id(memory(a)): memory(a).nbytes
        for out in kept
        for a in (out.last_hidden_state, out.special_hidden_state, out.align.dataXd, out.piece_ids)
    }
    assert len(kept) == 2
    assert sum(held.values()) <= cache.nbytes
    fresh, _ = build(model_dirs["roberta"], {}, frozen=True)  # the copies hold what it computes
    again = [doc._.trf for doc in fresh.pipe(texts[1::-1], batch_size=2)]
    for a, out in zip(again, kept, strict=True):
        np.testing.assert_allclose(a.last_hidden_state, out.last_hidden_state, atol=1e-6)
        np.testing.assert_array_equal(a.align.dataXd, out.align.dataXd)


# 10. GPU options on CPU: bf16 autocast only where bf16 is native ------------------------------


def test_gpu_options_change_nothing_on_a_cpu_without_native_bf16(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forward_module, "native_bf16", lambda: False)
    results = []
    for options in ({}, {"mixed_precision": True, "gradient_checkpointing": True}):
        nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()}, **options)
        assert encoder_options(nlp.get_pipe("trf").model).mixed_precision is bool(options)
        losses = train(nlp, egs, steps=3)["tagger"]
        hf = encoder(nlp)
        assert not any(getattr(m, "gradient_checkpointing", False) for m in hf.modules())
        out = [doc._.trf.last_hidden_state for doc in nlp.pipe(TEXTS)]
        results.append((losses, snapshot(hf), out))
    (loss_a, weights_a, out_a), (loss_b, weights_b, out_b) = results
    assert loss_a == loss_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    for a, b in zip(out_a, out_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_mixed_precision_trains_in_bf16_with_fp32_weights_where_bf16_is_native(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forced on here: emulated bf16 computes the same values, slowly.
    monkeypatch.setattr(forward_module, "native_bf16", lambda: True)
    dtypes: list[torch.dtype] = []
    results = []
    for mixed in (False, True):
        nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()}, mixed_precision=mixed)
        hf = encoder(nlp)
        hook = hf.encoder.layer[0].output.dense.register_forward_hook(
            lambda module, args, out: dtypes.append(out.dtype)
        )
        losses = train(nlp, egs, steps=3)["tagger"]
        hook.remove()
        assert all(p.dtype == torch.float32 for p in hf.parameters())  # fp32 master weights
        out = np.concatenate([doc._.trf.last_hidden_state for doc in nlp.pipe(TEXTS)])
        results.append((losses, snapshot(hf), out))
    assert set(dtypes) == {torch.float32, torch.bfloat16}  # fp32 run, then bf16 autocast
    (loss_a, weights_a, out_a), (loss_b, weights_b, out_b) = results
    assert loss_b != loss_a and np.allclose(loss_b, loss_a, rtol=0.05)
    assert not all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert all(torch.isfinite(w).all() for w in weights_b.values())
    assert out_b.dtype == np.float32 and np.isfinite(out_b).all()
    cos = (out_a * out_b).sum(1) / np.linalg.norm(out_a, axis=1) / np.linalg.norm(out_b, axis=1)
    assert cos.mean() > 0.99


# 11. Save and load a trained pipeline -----------------------------------------------------------


def test_trained_pipeline_round_trips(model_dirs: dict[str, str], tmp_path: Path) -> None:
    components = {
        "tagger": tagger(),
        "ner": {"model": transition("ner")},
        "textcat": textcat(True),
    }
    nlp, egs = build(model_dirs["roberta"], components)
    train(nlp, egs, steps=10, lr=0.01)
    expected = predictions(nlp)
    # Trained, not trivial: the tags and entities are learned, the class scores differ by doc.
    assert [p["tags"] for p in expected] == [ann["tags"] for _, ann in DATA]
    assert [p["ents"] for p in expected] == [ann["ents"] for _, ann in DATA]
    assert len({round(p["cats"]["BIZ"], 4) for p in expected}) > 1
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("trf").listening_components == ["tagger", "ner", "textcat"]
    assert_same_predictions(expected, predictions(loaded))
    fresh = spacy.blank("en").from_config(nlp.config)
    fresh.from_bytes(nlp.to_bytes())
    assert_same_predictions(expected, predictions(fresh))


# 12. Hybrid token features ----------------------------------------------------------------------


def test_hybrid_tok2vec_concatenates_hash_embeddings(model_dirs: dict[str, str]) -> None:
    hybrid = {
        "@architectures": "spacy-trf.HybridTok2Vec.v1",
        "transformer": listener(),
        "embed": {
            "@architectures": "spacy.MultiHashEmbed.v2",
            "width": 32,
            "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
            "rows": [5000, 1000, 2500, 2500],
            "include_static_vectors": False,
        },
    }
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger(hybrid)})
    assert nlp.get_pipe("trf").listening_components == ["tagger"]
    losses = train(nlp, egs, steps=10, lr=0.01)["tagger"]
    assert losses[-1] < 0.7 * losses[0], losses
    doc = nlp(TEXTS[0])
    t2v = nlp.get_pipe("tagger").model.get_ref("tok2vec")
    rows = t2v.predict([doc])[0]
    width = encoder(nlp).config.hidden_size
    assert rows.shape == (len(doc), width + 32)
    trf_rows, embed_rows = (layer.predict([doc])[0] for layer in t2v.layers)
    np.testing.assert_allclose(rows[:, :width], trf_rows, atol=1e-6)
    np.testing.assert_allclose(rows[:, width:], embed_rows, atol=1e-6)


# 13. An inline encoder --------------------------------------------------------------------------


def test_inline_tok2vec_transformer_trains_and_round_trips(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    inline = {
        "@architectures": "spacy-trf.Tok2VecTransformer.v1",
        "name": model_dirs["xlmr"],
        "get_spans": {"@span_getters": "spacy-trf.doc_spans.v1"},
        "pooling": {"@layers": "reduce_mean.v1"},
    }
    nlp, egs = build(None, {"tagger": tagger(inline)})
    assert nlp.pipe_names == ["tagger"]
    own = next(n for n in nlp.get_pipe("tagger").model.walk() if n.shims)
    hf = get_shim(own).hf_model
    before = snapshot(hf)
    losses = train(nlp, egs, steps=10, lr=0.01)["tagger"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert changed(hf, before)
    expected = predictions(nlp)
    scores = nlp.get_pipe("tagger").model.predict([nlp.make_doc(t) for t in TEXTS])
    nlp.to_disk(tmp_path / "p")
    for loaded in (
        spacy.load(tmp_path / "p"),
        spacy.blank("en").from_config(nlp.config).from_bytes(nlp.to_bytes()),
    ):
        assert_same_predictions(expected, predictions(loaded))
        again = loaded.get_pipe("tagger").model.predict([loaded.make_doc(t) for t in TEXTS])
        for a, b in zip(scores, again, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_encoder_weights_are_updated_in_place(model_dirs: dict[str, str]) -> None:
    """Steps write into the parameters' own storage (rebinding them grew memory every step)."""
    nlp, egs = build(model_dirs["roberta"], {"tagger": tagger()})
    params = list(get_shim(nlp.get_pipe("trf").model).hf_model.parameters())
    before = [(p.data_ptr(), p.detach().clone()) for p in params]
    optimizer = Adam(0.01)
    for _ in range(2):
        nlp.update(egs, sgd=optimizer)
    assert [p.data_ptr() for p in params] == [ptr for ptr, _ in before]
    assert any(not torch.equal(p.detach(), old) for p, (_, old) in zip(params, before, strict=True))
