"""Pieces <-> tokens: exact, many-to-many alignment by character overlap.

A piece belongs to every token whose character range overlaps the piece's range, both ranges taken
after stripping whitespace. Byte-level BPE ("Ġword") and Metaspace ("▁word") offsets include the
leading space; stripping makes them align to the word only. Whitespace tokens get no pieces.
Everything is vectorised numpy. ``compat`` holds spacy-transformers' rule, for migrated pipelines.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from spacy.attrs import IDX, LENGTH
from spacy.tokens import Doc
from thinc.types import Ints1d, Ragged

from ..registry import alignments

# Every code point for which str.isspace() holds lies below U+3001.
_WS_LIMIT = 0x3001
_IS_WS = np.array([chr(c).isspace() for c in range(_WS_LIMIT)], dtype=bool)


@dataclass
class TokenBounds:
    """Whitespace-stripped character ranges of a doc's tokens, plus the doc's strip tables."""

    starts: np.ndarray  # (n_tokens,) stripped start; whitespace tokens: start == end
    ends: np.ndarray
    nonempty: np.ndarray  # (n_tokens,) bool: token has a non-whitespace character
    next_char: np.ndarray  # (n_chars + 1,) first non-space char index >= i (or n_chars)
    prev_end: np.ndarray  # (n_chars + 1,) one past the last non-space char index < i (or 0)
    # (n_tokens,) starts as given (Token.idx), whitespace not stripped
    raw_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def strip(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shrink [start, end) ranges to exclude leading and trailing whitespace."""
        n = len(self.next_char) - 1
        s = self.next_char[np.clip(starts, 0, n)]
        e = self.prev_end[np.clip(ends, 0, n)]
        return s, np.maximum(e, s)


def whitespace_mask(text: str) -> np.ndarray:
    """One bool per character: is it whitespace (as str.isspace)."""
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    return (cps < _WS_LIMIT) & _IS_WS[np.minimum(cps, _WS_LIMIT - 1)]


def token_bounds(doc: Doc, text: str | None = None) -> TokenBounds:
    """Compute the stripped token ranges and strip tables of a doc (whose text may be given)."""
    arr = doc.to_array([IDX, LENGTH]).astype(np.int64).reshape(-1, 2)
    return char_bounds(doc.text if text is None else text, arr[:, 0], arr[:, 0] + arr[:, 1])


def word_bounds(words: list[str]) -> tuple[str, TokenBounds]:
    """Join pre-split words with single spaces; return the text and the words' bounds."""
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    starts = np.cumsum(lengths + 1) - lengths - 1
    text = " ".join(words)
    return text, char_bounds(text, starts, starts + lengths)


def char_bounds(text: str, starts: np.ndarray, ends: np.ndarray) -> TokenBounds:
    """The strip tables of a text and the stripped [start, end) ranges of its tokens."""
    is_ws = whitespace_mask(text)
    n = len(is_ws)
    positions = np.arange(n, dtype=np.int64)
    next_char = np.empty(n + 1, dtype=np.int64)
    next_char[n] = n
    if n:
        nxt = np.where(is_ws, n, positions)
        next_char[:n] = np.minimum.accumulate(nxt[::-1])[::-1]
    prev_end = np.zeros(n + 1, dtype=np.int64)
    if n:
        prev_end[1:] = np.maximum.accumulate(np.where(is_ws, 0, positions + 1))
    empty = np.zeros(0, np.int64)
    table = TokenBounds(empty, empty, np.zeros(0, bool), next_char, prev_end, starts)
    s, e = table.strip(starts, ends)
    nonempty = e > s
    # Whitespace tokens collapse onto their own start, which keeps both arrays sorted.
    table.starts = np.where(nonempty, s, starts)
    table.ends = np.where(nonempty, e, starts)
    table.nonempty = nonempty
    return table


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [lo[i], hi[i]), return (i, j) for every j in each range, vectorised."""
    counts = np.maximum(hi - lo, 0)
    outer = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    first = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    inner = first + np.arange(len(outer), dtype=np.int64)
    return outer, inner


# Pieces' (start, end) offsets and a text's token bounds -> (one entry per token holding its
# piece indices in piece order, the non-whitespace tokens that no piece covers).
Aligner = Callable[[np.ndarray, "TokenBounds"], tuple[Ragged, np.ndarray]]


def ragged_by_token(pieces: np.ndarray, tokens: np.ndarray, n_tokens: int) -> Ragged:
    """(piece, token) pairs -> one entry per token with its pieces, in piece order."""
    order = np.argsort(tokens, kind="stable")
    lengths = np.bincount(tokens, minlength=n_tokens).astype(np.int32)
    return Ragged(cast(Ints1d, pieces[order].astype(np.int32)), cast(Ints1d, lengths))


@alignments("spacy-trf.exact_alignment.v1")
def configure_exact_alignment() -> Aligner:
    """spacy-trf's alignment: a piece belongs to the tokens its non-space characters overlap."""
    return align_doc


def align_doc(piece_offsets: np.ndarray, bounds: TokenBounds) -> tuple[Ragged, np.ndarray]:
    """Align pieces to tokens.

    Returns a Ragged with one entry per token holding the token's piece indices (in piece order),
    and the indices of non-whitespace tokens that no piece covers.
    """
    n_tokens = len(bounds.starts)
    p_start, p_end = bounds.strip(piece_offsets[:, 0], piece_offsets[:, 1])
    lo = np.searchsorted(bounds.ends, p_start, side="right")
    hi = np.searchsorted(bounds.starts, p_end, side="left")
    hi = np.where(p_end > p_start, hi, lo)
    pieces, tokens = expand_ranges(lo, hi)
    keep = bounds.nonempty[tokens]
    align = ragged_by_token(pieces[keep], tokens[keep], n_tokens)
    missing = np.flatnonzero(bounds.nonempty & (np.asarray(align.lengths) == 0))
    return align, missing


# Registers spacy-transformers' rule beside the exact one (it builds on the helpers above).
from . import compat  # noqa: E402, F401
