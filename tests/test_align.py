"""Alignment, windowing and batching invariants (no model needed)."""

import numpy as np
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc

from spacy_trf.align import align_doc, token_bounds, whitespace_mask
from spacy_trf.align.compat import align_doc_st_compat
from spacy_trf.windows import make_batches, make_windows, piece_counts

VOCAB = spacy.blank("en").vocab
WORD = st.text(alphabet="ab.-'é9🙂\u200d", min_size=1, max_size=6)
SPACE = st.sampled_from(["", " ", "  ", "\n", " \t"])


@st.composite
def doc_and_pieces(draw: st.DrawFn) -> tuple[Doc, np.ndarray]:
    """A doc with arbitrary tokens (whitespace tokens too) and pieces cut at random places,
    some with the leading space attached (byte-BPE / Metaspace style)."""
    words = draw(st.lists(st.one_of(WORD, SPACE.filter(bool)), min_size=0, max_size=12))
    spaces = draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    doc = Doc(VOCAB, words=words, spaces=spaces)
    text = doc.text
    cuts = sorted(set(draw(st.lists(st.integers(0, max(len(text), 1)), max_size=20))))
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    pieces = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    return doc, np.asarray(pieces, dtype=np.int64).reshape(-1, 2)


@st.composite
def doc_and_any_pieces(draw: st.DrawFn) -> tuple[Doc, np.ndarray]:
    """A doc and pieces anywhere: overlapping (byte pieces sharing a character), leaving gaps
    (dropped characters), and (0, 0) special tokens."""
    words = draw(st.lists(st.one_of(WORD, SPACE.filter(bool)), max_size=12))
    spaces = draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    doc = Doc(VOCAB, words=words, spaces=spaces)
    n = len(doc.text)
    ends = draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, n)), max_size=20))
    pieces = [(0, 0), *[(min(a, b), max(a, b)) for a, b in ends], (0, 0)]
    return doc, np.asarray(pieces, dtype=np.int64).reshape(-1, 2)


def stripped(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


@settings(max_examples=300, deadline=None)
@given(doc_and_pieces())
def test_alignment_is_exactly_stripped_overlap(case: tuple[Doc, np.ndarray]) -> None:
    doc, pieces = case
    align, missing = align_doc(pieces, token_bounds(doc))
    assert list(align.lengths) == [len(_pieces_of(align, i)) for i in range(len(doc))]
    assert len(align.lengths) == len(doc)
    text = doc.text
    for tok in doc:
        ts, te = stripped(text, tok.idx, tok.idx + len(tok))
        expected = []
        for p, (a, b) in enumerate(pieces.tolist()):
            ps, pe = stripped(text, a, b)
            if ps < pe and ts < te and ps < te and ts < pe:
                expected.append(p)
        assert _pieces_of(align, tok.i) == expected
        if tok.is_space:
            assert expected == []
    # The pieces cover the whole text, so every non-whitespace token has a piece.
    assert len(missing) == 0


def _pieces_of(align, i: int) -> list[int]:  # type: ignore[no-untyped-def]
    starts = np.cumsum(align.lengths) - align.lengths
    return align.dataXd[starts[i] : starts[i] + align.lengths[i]].tolist()


@settings(max_examples=500, deadline=None)
@given(doc_and_any_pieces())
def test_st_compat_alignment_is_spacy_transformers_rule(case: tuple[Doc, np.ndarray]) -> None:
    """Each token owns its characters and the one after it (later tokens win); a piece belongs
    to every token owning one of its characters."""
    doc, pieces = case
    owner = np.full(len(doc.text) + 1, -1)
    for tok in doc:
        owner[tok.idx : tok.idx + len(tok) + 1] = tok.i
    align, missing = align_doc_st_compat(pieces, token_bounds(doc))
    assert len(align.lengths) == len(doc) and len(missing) == 0
    for tok in doc:
        expected = [p for p, (a, b) in enumerate(pieces.tolist()) if tok.i in owner[a:b]]
        assert _pieces_of(align, tok.i) == expected


def test_st_compat_alignment_gives_a_token_the_next_words_leading_space_piece() -> None:
    doc = Doc(VOCAB, words=["On", "Monday", ","], spaces=[True, False, False])
    pieces = np.asarray([[0, 2], [2, 4], [4, 9], [9, 10], [0, 0]])  # On, ĠM, onday, ",", <s>
    compat, _ = align_doc_st_compat(pieces, token_bounds(doc))
    exact, _ = align_doc(pieces, token_bounds(doc))
    assert [_pieces_of(compat, i) for i in range(3)] == [[0, 1], [1, 2], [3]]
    assert [_pieces_of(exact, i) for i in range(3)] == [[0], [1, 2], [3]]


def test_missing_tokens_are_reported() -> None:
    doc = Doc(VOCAB, words=["a", "\u200d", "b"], spaces=[True, True, False])
    pieces = np.asarray([[0, 1], [4, 5]])  # the tokenizer dropped the zero-width joiner
    align, missing = align_doc(pieces, token_bounds(doc))
    assert missing.tolist() == [1]
    assert align.lengths.tolist() == [1, 0, 1]


def test_whitespace_mask_matches_isspace() -> None:
    text = "a \t\n\u00a0\u2003b\u3000\u200dc\x85"
    assert whitespace_mask(text).tolist() == [c.isspace() for c in text]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 700), max_size=6),
    st.integers(1, 130),
    st.data(),
)
def test_windows_cover_every_piece_within_spans(
    spans: list[int], window: int, data: st.DataObject
) -> None:
    stride = data.draw(st.integers(1, window))
    starts, ends = make_windows(np.asarray(spans), window, stride)
    assert np.all(ends - starts <= window) and np.all(ends > starts)
    offsets = np.concatenate([[0], np.cumsum(spans)])
    span_of = np.searchsorted(offsets, starts, side="right") - 1
    assert np.all(ends <= offsets[span_of + 1]), "a window crosses a span boundary"
    assert np.all(piece_counts(starts, ends, int(offsets[-1])) >= 1), "a piece was truncated"
    for s, n in zip(offsets[:-1], spans, strict=True):
        mine = (starts >= s) & (starts < s + n)
        if n:
            assert starts[mine][0] == s and ends[mine][-1] == s + n
            assert np.all(np.diff(starts[mine]) <= stride)
            expected = 1 if n <= window else -(-(n - window) // stride) + 1
            assert mine.sum() == expected
            if n >= window:
                assert np.all(ends[mine] - starts[mine] == window)


@given(st.lists(st.integers(1, 300), max_size=50), st.integers(1, 5000))
def test_batches_respect_padded_budget(lengths: list[int], budget: int) -> None:
    arr = np.asarray(lengths)
    batches = make_batches(arr, budget)
    seen = np.concatenate(batches) if batches else np.zeros(0, dtype=int)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or arr[batch].max() * len(batch) <= budget
    flat = arr[seen] if len(seen) else arr
    assert np.all(np.diff(flat) <= 0), "windows are not sorted by length"


def test_special_template_read_from_tokenizer_xlnet_style() -> None:
    """Class token at the end with its own type id, as XLNet does: read, never hard-coded."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from spacy_trf.pieces import PieceTokenizer

    vocab = {"<unk>": 0, "<sep>": 1, "<cls>": 2, "<pad>": 3, "hello": 4, "world": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A:0 <sep>:0 <cls>:2", special_tokens=[("<sep>", 1), ("<cls>", 2)]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    pieces = PieceTokenizer(tok)
    template = pieces.template
    assert template.prefix_ids.tolist() == []
    assert template.suffix_ids.tolist() == [1, 2]
    assert template.suffix_type_ids.tolist() == [0, 2]
    assert template.content_type_id == 0
    assert pieces.pad_id == 3 and pieces.unk_id == 0
    ((ids, offsets),) = pieces.encode_texts(["hello  world"])
    assert ids.tolist() == [4, 5] and offsets.tolist() == [[0, 5], [7, 12]]


def test_build_batch_places_specials_and_padding() -> None:
    from spacy_trf.pieces import SpecialTemplate
    from spacy_trf.windows import build_batch

    template = SpecialTemplate(
        prefix_ids=np.asarray([101]),
        suffix_ids=np.asarray([102, 103]),
        prefix_type_ids=np.asarray([0]),
        suffix_type_ids=np.asarray([0, 2]),
        content_type_id=0,
    )
    piece_ids = np.arange(10, 20)
    starts, ends = np.asarray([0, 3]), np.asarray([3, 8])
    batch = build_batch(np.asarray([1, 0]), starts, ends, piece_ids, template, pad_id=0)
    assert batch.input_ids.tolist() == [
        [101, 13, 14, 15, 16, 17, 102, 103],
        [101, 10, 11, 12, 102, 103, 0, 0],
    ]
    assert batch.token_type_ids.tolist() == [[0, 0, 0, 0, 0, 0, 0, 2], [0, 0, 0, 0, 0, 2, 0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 8, [1] * 6 + [0, 0]]
    flat = batch.input_ids.reshape(-1)
    assert flat[batch.content_flat].tolist() == piece_ids[batch.content_src].tolist()
    # Special rows land window-major: window w's specials at w * 3 .. w * 3 + 2.
    order = np.argsort(batch.special_dst)
    assert batch.special_dst[order].tolist() == [0, 1, 2, 3, 4, 5]
    assert flat[batch.special_flat[order]].tolist() == [101, 102, 103] * 2
