"""Any text: random Unicode, emoji, control and bidi characters, whitespace runs, special-token
strings and 5,000-character tokens through nlp.pipe for the three tokenizer families.

SPACY_TRF_FUZZ_EXAMPLES sets the number of batches per family (benchmarks/reliability/fuzz.py
runs 10,000 texts per family); SPACY_TRF_FUZZ_REPORT names a JSON-lines file for the counts.
"""

import json
import os
from collections.abc import Callable

import numpy as np
import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc

EXAMPLES = int(os.environ.get("SPACY_TRF_FUZZ_EXAMPLES", "15"))
REPORT = os.environ.get("SPACY_TRF_FUZZ_REPORT")

SPECIAL = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "<s>", "</s>", "<pad>", "<unk>",
           "<mask>", "##ing", "##", "▁", "▁▁the", "Ġ", "Ġthe", "Ċ", "<|endoftext|>"]  # fmt: skip
EMOJI = ["👩\u200d👩\u200d👧\u200d👦", "👍🏽", "🧑🏿\u200d🚀", "🇩🇪🇯🇵", "🏳️\u200d🌈", "❤️", "1️⃣", "🫠"]
CONTROL = ["\x00", "\x1b", "\x1b[31m", "\x07", "\x7f", "\x85", "\ufeff", "\ufffd", "\ufffe"]
BIDI = ["\u202e", "\u202d", "\u2066", "\u2067", "\u2069", "\u200f", "\u200e", "\u061c"]
WHITESPACE = [" ", "\t", "\n", "\r\n", "\u3000", "\u2028", "\u2029", "\u00a0", "\u200b", "\u2009"]
COMBINING = ["e\u0301", "a\u0308\u0323", "\u0301", "\u0336" * 12, "Z\u0351\u0354\u0347" * 5]
SCRIPTS = [
    "Москва", "北京市", "القاهرة", "हिन्दी", "ελληνικά", "עברית", "한국어", "ไทย", "ქართული",
    "Ꭰꮳ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𓀀𓁐", "ᠮᠣᠩᠭᠣᠯ", "ܐܪܡܝܐ",
]  # fmt: skip

fragment = st.one_of(
    st.text(min_size=1, max_size=40),  # any code point hypothesis draws, surrogates excluded
    st.sampled_from(SPECIAL + EMOJI + CONTROL + BIDI + COMBINING + SCRIPTS),
    st.lists(st.sampled_from(WHITESPACE), min_size=1, max_size=8).map("".join),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "é", "🙂", "x1", "北"]), st.integers(2_500, 5_000)
    ),  # fmt: skip
    st.sampled_from(["word", "the", "New York", "don't", "9.11", "e-mail", "..."]),
)
text = st.one_of(
    st.just(""),
    st.lists(fragment, max_size=12).map(" ".join),
    st.lists(fragment, max_size=12).map("".join),
)


FAMILIES = ("bert", "roberta", "xlmr")


def test_any_text_is_encoded_and_aligned(nlp_factory: Callable[..., spacy.Language]) -> None:
    """No crash; every token that is not whitespace has pieces; outputs finite; one
    alignment length and one doc.tensor row per token. Each drawn batch is tokenized once (by
    spaCy, which takes most of the time on long tokens) and encoded by every family."""
    pipelines = {family: nlp_factory(family) for family in FAMILIES}
    tokenizer = pipelines["bert"].tokenizer
    counts = {f: {"family": f, "texts": 0, "tokens": 0, "pieces": 0, "chars": 0} for f in FAMILIES}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=EXAMPLES <= 100,  # the default suite draws the same texts every run
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(text, min_size=1, max_size=4))
    def check(texts: list[str]) -> None:
        tokenized = [
            ([t.text for t in d], [bool(t.whitespace_) for t in d]) for d in tokenizer.pipe(texts)
        ]
        for family, nlp in pipelines.items():
            docs = [Doc(nlp.vocab, words=words, spaces=spaces) for words, spaces in tokenized]
            for doc in nlp.pipe(docs, batch_size=3):
                check_doc(doc, counts[family])

    check()
    if REPORT:
        with open(REPORT, "a", encoding="utf8") as file:
            for family in FAMILIES:
                file.write(json.dumps(counts[family]) + "\n")


def check_doc(doc: Doc, counts: dict) -> None:
    out = doc._.trf
    lengths = out.align.lengths
    assert len(lengths) == len(doc)
    space = np.array([tok.is_space for tok in doc], dtype=bool)
    assert (lengths[~space] > 0).all(), [t.text for t in doc if not t.is_space]
    assert out.last_hidden_state.shape[0] == len(out.piece_ids)
    assert np.isfinite(out.last_hidden_state).all()
    assert doc.tensor.shape == (len(doc), out.last_hidden_state.shape[1])
    assert np.isfinite(doc.tensor).all()
    counts["texts"] += 1
    counts["tokens"] += len(doc)
    counts["pieces"] += len(out.piece_ids)
    counts["chars"] += len(doc.text)
