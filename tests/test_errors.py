"""Bad input and bad configuration: no crash where there is data, one clear error where not."""

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import spacy
from thinc.api import ConfigValidationError

from spacy_trf.encoder import ModelLoadError
from spacy_trf.pieces import PieceTokenizer

from .conftest import make_nlp

NLPFactory = Callable[..., spacy.Language]

AWKWARD = [
    "",
    "   ",
    " \n\t ",
    "Family: 👩\u200d👩\u200d👧 and 🇩🇪 flags 🎉🎉",
    "control\x00chars\x07here \x1b[31m red",
    "zero\u200bwidth\u200djoiners\u200c and \ufeffBOM",
    "a" * 10_000,
    "x" + "🙂" * 3000 + " tail",
    "Mixed: Москва 北京市 القاهرة हिन्दी ελληνικά עברית 한국어 ไทย",
    "\u200d",
    "tabs\tand\nnew\n\nlines  and   spaces",
]


@pytest.mark.parametrize("text", AWKWARD, ids=range(len(AWKWARD)))
def test_awkward_text_every_word_gets_a_piece(nlp: spacy.Language, text: str) -> None:
    doc = nlp(text)
    out = doc._.trf
    assert len(out.align.lengths) == len(doc)
    assert out.last_hidden_state.shape[0] == len(out.piece_ids)
    assert np.isfinite(out.last_hidden_state).all()
    for tok in doc:
        n = out.align.lengths[tok.i]
        assert (n == 0) if tok.is_space else (n > 0), (tok.text, n)
    assert doc.tensor.shape[0] == len(doc)


def test_many_docs_in_one_call(nlp: spacy.Language) -> None:
    docs = list(nlp.pipe(AWKWARD * 3, batch_size=7))
    assert [len(d._.trf.align.lengths) for d in docs] == [len(d) for d in docs]


@pytest.mark.slow
def test_million_word_doc(model_dirs: dict[str, str]) -> None:
    nlp = make_nlp(model_dirs["roberta"])
    nlp.max_length = 10**8
    words = ("The quick brown fox , jumps over the lazy dog ' s back ." * 80_000).split(" ")[
        :1_000_000
    ]
    doc = nlp(" ".join(words))
    out = doc._.trf
    assert len(doc) >= 1_000_000
    assert out.last_hidden_state.shape[0] == len(out.piece_ids)
    assert (out.align.lengths > 0).all()
    assert np.isfinite(out.last_hidden_state[-5:]).all()


def test_missing_model_dir_is_clear_and_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="does not exist"):
        make_nlp(str(tmp_path / "no-such-model"))
    assert time.perf_counter() - start < 10


def test_dir_without_config_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        make_nlp(str(tmp_path))


def test_hub_id_offline_is_clear_and_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="not-a-real-org/not-a-model.*HF_HUB_OFFLINE"):
        make_nlp("not-a-real-org/not-a-model")
    assert time.perf_counter() - start < 10


def test_decoder_model_is_refused(model_dirs: dict[str, str]) -> None:
    with pytest.raises(ModelLoadError, match="decoder model.*gpt2"):
        make_nlp(model_dirs["gpt2"])


def test_slow_tokenizer_is_refused() -> None:
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="not a fast tokenizer"):
        PieceTokenizer(SlowTokenizer())


@pytest.mark.parametrize(
    "config,match",
    [
        ({"model": {"window": "wide"}}, "window"),
        ({"model": {"window": 0}}, "window"),
        ({"model": {"window": 16, "stride": 32}}, "stride"),
        ({"model": {"window": 64}}, r"lower stride with the window \(e.g. stride = 48"),
        ({"model": {"output_hidden_states": "maybe"}}, "output_hidden_states"),
        ({"max_batch_pieces": 0}, "max_batch_pieces"),
        ({"max_batch_pieces": "lots"}, "max_batch_pieces"),
        ({"model": {"tokenizer_config": "fast"}}, "tokenizer_config"),
    ],
)
def test_wrong_config_values_are_clear(
    model_dirs: dict[str, str], config: dict, match: str
) -> None:
    with pytest.raises((ValueError, ConfigValidationError), match=match):
        make_nlp(model_dirs["roberta"], **config)


def test_window_longer_than_model_is_clear(model_dirs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"window <= 126"):
        make_nlp(model_dirs["roberta"], model={"window": 200, "stride": 100})


def test_uninitialized_component_is_clear(model_dirs: dict[str, str]) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"model": {"name": model_dirs["roberta"]}})
    with pytest.raises(ValueError, match="nlp.initialize"):
        nlp("Hello")


def test_saving_an_uninitialized_component_is_clear(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"model": {"name": model_dirs["roberta"]}})
    with pytest.raises(ValueError, match="nlp.initialize"):
        nlp.to_disk(tmp_path / "p")
    assert list(tmp_path.iterdir()) == []  # no config.cfg, meta.json or tokenizer left behind
    with pytest.raises(ValueError, match="nlp.initialize"):
        nlp.to_bytes()
