"""The trf component over three tokenizer families: outputs, alignment, windows, hooks."""

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc

import spacy_trf
from spacy_trf.encoder import get_shim

from .conftest import make_nlp

SENTENCE = (
    "Laced with dreams-dripping in reality, the American Dream reignites after 9.11 with a true "
    "story about the Devil Ray's mid-life rookie, Jimmy Morris."
)
NLPFactory = Callable[..., spacy.Language]


def hf_parts(nlp: spacy.Language) -> tuple[torch.nn.Module, object]:
    shim = get_shim(nlp.get_pipe("trf").model)
    return shim.hf_model, shim.tokenizer


def piece_spans(doc: Doc, i: int) -> list[str]:
    """The stripped text of each piece aligned to token i."""
    out = doc._.trf
    return [doc.text[a:b].strip() for a, b in out.piece_offsets[out.token_pieces(i)].tolist()]


def test_add_pipe_works_without_import() -> None:
    code = (
        "import spacy, sys; nlp = spacy.blank('en'); nlp.add_pipe('trf'); "
        "print(type(nlp.get_pipe('trf')).__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "spacy_trf.pipeline.component"


def test_sentence_alignment(nlp: spacy.Language, family: str) -> None:
    doc = nlp(SENTENCE)
    out = doc._.trf
    assert len(out.align.lengths) == len(doc)
    assert len(out.piece_ids) == out.last_hidden_state.shape[0]
    for tok in doc:
        rows = out.token_pieces(tok.i)
        assert len(rows), f"{tok.text!r} has no piece ({family})"
        covered = np.zeros(len(tok), dtype=bool)
        for a, b in out.piece_offsets[rows].tolist():
            piece = doc.text[a:b]
            a += len(piece) - len(piece.lstrip())
            b -= len(piece) - len(piece.rstrip())
            assert a < tok.idx + len(tok) and b > tok.idx, (
                f"{piece!r} does not overlap {tok.text!r}"
            )
            covered[max(a - tok.idx, 0) : max(b - tok.idx, 0)] = True
        assert covered.all(), f"the pieces of {tok.text!r} do not cover it ({family})"
    # Where the "+1 trailing char" rule of other libraries goes wrong: a piece that carries the
    # leading space ("Ġwith", "▁the") belongs to its word only, never to the word before.
    by_text = {t.text: t.i for t in doc}
    for word in ("with", "the", "rookie"):
        before = doc[by_text[word] - 1]
        after_pieces = [
            doc.text[a:b] for a, b in out.piece_offsets[out.token_pieces(before.i)].tolist()
        ]
        assert not any(word in p for p in after_pieces), (family, before.text, after_pieces)
    assert "".join(piece_spans(doc, by_text["9.11"])).replace(" ", "") == "9.11"
    if family == "bert":
        assert [doc._.trf.piece_texts[i] for i in doc._.trf.token_pieces(by_text["reignites"])] == [
            "reign",
            "##ites",
        ]
    if family == "roberta":
        assert [doc._.trf.piece_texts[i] for i in doc._.trf.token_pieces(by_text["rookie"])] == [
            "Ġrookie"
        ]


def test_matches_hf_model_on_a_single_window(nlp: spacy.Language, family: str) -> None:
    hf_model, tokenizer = hf_parts(nlp)
    doc = nlp(SENTENCE)
    enc = tokenizer(SENTENCE, return_tensors="pt", return_special_tokens_mask=True)
    special = enc.pop("special_tokens_mask")[0].bool()
    with torch.inference_mode():
        expected = hf_model.eval()(**enc).last_hidden_state[0].numpy()
    out = doc._.trf
    assert out.piece_ids.tolist() == enc["input_ids"][0][~special].tolist()
    np.testing.assert_allclose(out.last_hidden_state, expected[~special.numpy()], atol=1e-5)
    np.testing.assert_allclose(out.special_hidden_state, expected[special.numpy()], atol=1e-5)
    assert out.n_special == int(special.sum()) == 2
    assert out.window_ranges.tolist() == [[0, len(out.piece_ids)]]


def test_long_doc_is_windowed_and_stitched(nlp_factory: NLPFactory, family: str) -> None:
    window, stride = 40, 30
    nlp = nlp_factory(family, model={"window": window, "stride": stride})
    hf_model, tokenizer = hf_parts(nlp)
    text = " ".join([SENTENCE] * 6)
    doc = nlp(text)
    out = doc._.trf
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert out.piece_ids.tolist() == ids, "pieces were truncated or changed"
    ranges = out.window_ranges
    assert len(ranges) == -(-(len(ids) - window) // stride) + 1
    # Recompute by hand: each window alone through the model, overlaps averaged.
    total = np.zeros_like(out.last_hidden_state)
    count = np.zeros(len(ids))
    specials = []
    hf_model.eval()
    for a, b in ranges.tolist():
        first, last = (
            (tokenizer.cls_token_id, tokenizer.sep_token_id)
            if family == "bert"
            else (tokenizer.bos_token_id, tokenizer.eos_token_id)
        )
        window_ids = [first, *ids[a:b], last]
        with torch.inference_mode():
            hidden = hf_model(torch.tensor([window_ids])).last_hidden_state[0].numpy()
        total[a:b] += hidden[1:-1]
        count[a:b] += 1
        specials.extend([hidden[0], hidden[-1]])
    np.testing.assert_allclose(out.last_hidden_state, total / count[:, None], atol=1e-5)
    np.testing.assert_allclose(out.special_hidden_state, np.stack(specials), atol=1e-5)
    assert all(len(piece_spans(doc, t.i)) > 0 for t in doc if not t.is_space)


def test_batching_does_not_change_results(nlp_factory: NLPFactory) -> None:
    texts = [SENTENCE, "Short one.", " ".join([SENTENCE] * 3), "Another, longer doc about cats."]
    big = nlp_factory("roberta", model={"window": 32, "stride": 24})
    small = nlp_factory("roberta", model={"window": 32, "stride": 24}, max_batch_pieces=40)
    for a, b in zip(big.pipe(texts), small.pipe(texts), strict=True):
        np.testing.assert_allclose(a._.trf.last_hidden_state, b._.trf.last_hidden_state, atol=1e-5)
        np.testing.assert_allclose(
            a._.trf.special_hidden_state, b._.trf.special_hidden_state, atol=1e-5
        )


def test_hidden_states_and_attentions(nlp_factory: NLPFactory, family: str) -> None:
    nlp = nlp_factory(
        family,
        model={"output_hidden_states": True, "output_attentions": True, "window": 20, "stride": 15},
    )
    hf_model, _ = hf_parts(nlp)
    doc = nlp(SENTENCE)
    out = doc._.trf
    n_layers = hf_model.config.num_hidden_layers
    assert out.hidden_states is not None and len(out.hidden_states) == n_layers + 1
    assert out.special_hidden_states is not None and len(out.special_hidden_states) == n_layers + 1
    np.testing.assert_allclose(out.hidden_states[-1], out.last_hidden_state)
    for layer in out.hidden_states:
        assert layer.shape == out.last_hidden_state.shape
    assert out.attentions is not None and len(out.attentions) == len(out.window_ranges)
    for (a, b), att in zip(out.window_ranges.tolist(), out.attentions, strict=True):
        n = b - a + out.n_special
        assert att.shape == (n_layers, hf_model.config.num_attention_heads, n, n)
        np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-4)


def test_doc_tensor_keeps_all_information(nlp: spacy.Language) -> None:
    for text in [SENTENCE, " ".join([SENTENCE] * 8), "  spaced   out \n text ", ""]:
        doc = nlp(text)
        out = doc._.trf
        assert doc.tensor.shape == (len(doc), out.width)
        expected = out.last_hidden_state.sum(0) + out.special_hidden_state.sum(0)
        np.testing.assert_allclose(doc.tensor.sum(0), expected, rtol=1e-4, atol=1e-3)


def test_vector_is_mean_pooling_and_similarity_ranks(nlp_factory: NLPFactory) -> None:
    nlp = nlp_factory("bert")
    hf_model, tokenizer = hf_parts(nlp)
    doc = nlp(SENTENCE)
    with torch.inference_mode():
        full = hf_model(**tokenizer(SENTENCE, return_tensors="pt")).last_hidden_state[0]
    # For one window the doc vector is exactly sentence-transformers' mean pooling.
    np.testing.assert_allclose(doc.vector, full.mean(0).numpy(), atol=1e-5)
    assert doc.has_vector and doc[0].has_vector and doc[:3].has_vector
    assert doc[0].vector.shape == doc[1:4].vector.shape == (384,)
    cat, dog, stock = (
        nlp("A cat sleeps on the sofa."),
        nlp("A dog naps on the couch."),
        nlp("Shares fell as bond yields rose."),
    )
    assert cat.similarity(dog) > cat.similarity(stock) + 0.2
    assert cat[1].similarity(dog[1]) > cat[1].similarity(stock[0])
    assert -1.0 <= doc[0:4].similarity(doc[5]) <= 1.0


SENT_SPANS = {"get_spans": {"@span_getters": "spacy-trf.sent_spans.v1"}}


def test_sent_spans_windows_stay_within_sentences(model_dirs: dict[str, str]) -> None:
    nlp = make_nlp(model_dirs["roberta"], before=("sentencizer",), model=SENT_SPANS)
    doc = nlp("First sentence here. Second one is a bit longer! And a third?")
    out = doc._.trf
    assert len(out.window_ranges) == len(list(doc.sents)) == 3
    for sent, (a, b) in zip(doc.sents, out.window_ranges.tolist(), strict=True):
        starts = out.piece_offsets[a:b, 0]
        assert (
            starts.min() >= sent.start_char - 1 and out.piece_offsets[a:b, 1].max() <= sent.end_char
        )


def test_sent_spans_without_boundaries_is_a_clear_error(model_dirs: dict[str, str]) -> None:
    nlp = make_nlp(model_dirs["roberta"], model=SENT_SPANS)
    with pytest.raises(ValueError, match="sentencizer"):
        nlp("No boundaries here.")


def test_custom_span_getter_from_registry(model_dirs: dict[str, str]) -> None:
    @spacy_trf.registry.span_getters("test-halves.v1")
    def configure_halves() -> Callable[[list[Doc]], list[list]]:
        def get_halves(docs: list[Doc]) -> list[list]:
            return [
                [doc[: len(doc) // 2], doc[len(doc) // 2 :]] if len(doc) > 1 else [doc[:]]
                for doc in docs
            ]

        return get_halves

    nlp = make_nlp(model_dirs["roberta"], model={"get_spans": {"@span_getters": "test-halves.v1"}})
    doc = nlp(SENTENCE)
    assert len(doc._.trf.window_ranges) == 2
    assert all(doc._.trf.align.lengths[[not t.is_space for t in doc]] > 0)


def test_special_template_comes_from_tokenizer(nlp: spacy.Language, family: str) -> None:
    shim = get_shim(nlp.get_pipe("trf").model)
    tok = shim.tokenizer
    template = shim.pieces.template
    assert template.prefix_ids.tolist() == [
        tok.cls_token_id if family == "bert" else tok.bos_token_id
    ]
    assert template.suffix_ids.tolist() == [
        tok.sep_token_id if family == "bert" else tok.eos_token_id
    ]


def test_span_getter_may_skip_tokens(model_dirs: dict[str, str]) -> None:
    @spacy_trf.registry.span_getters("test-first-half.v1")
    def configure_first_half() -> Callable[[list[Doc]], list[list]]:
        def get_first_half(docs: list[Doc]) -> list[list]:
            return [[doc[: len(doc) // 2]] if len(doc) > 1 else [] for doc in docs]

        return get_first_half

    nlp = make_nlp(
        model_dirs["roberta"], model={"get_spans": {"@span_getters": "test-first-half.v1"}}
    )
    doc = nlp(SENTENCE)
    lengths = doc._.trf.align.lengths
    half = len(doc) // 2
    assert (lengths[:half] > 0).all() and (lengths[half:] == 0).all()
    assert doc._.trf.piece_offsets[:, 1].max() <= doc[half - 1].idx + len(doc[half - 1])
