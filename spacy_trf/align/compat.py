"""spacy-transformers' piece-to-token rule, for pipelines migrated from it (``spacy-trf migrate``).

spacy-transformers gives each token its characters plus the one character after it (later tokens
win), then a piece every token owning one of its characters. A byte-level BPE piece whose offsets
start at the space before a word ("ĠMonday" from " Monday") so also belongs to the token before
that space. Components trained on spacy-transformers learnt from those rows; new pipelines use the
exact alignment.
"""

import numpy as np
from thinc.types import Ragged

from ..registry import alignments
from . import Aligner, TokenBounds, expand_ranges, ragged_by_token


@alignments("spacy-trf.st_compat_alignment.v1")
def configure_st_compat_alignment() -> Aligner:
    """spacy-transformers 1.x's alignment (meant for migrated pipelines only)."""
    return align_doc_st_compat


def align_doc_st_compat(
    piece_offsets: np.ndarray, bounds: TokenBounds
) -> tuple[Ragged, np.ndarray]:
    """Align pieces to tokens as spacy-transformers does; no token is reported missing (tokens
    without pieces stay empty there too)."""
    starts = bounds.raw_starts
    n_tokens = len(starts)
    p_start, p_end = piece_offsets[:, 0], piece_offsets[:, 1]
    # spaCy tokens are never empty and tile the text (a token's text plus at most its one
    # trailing space), so a character belongs to the last token starting at or before it, and a
    # piece to the run of tokens from its first character's to its last one's.
    lo = np.searchsorted(starts, p_start, side="right") - 1
    hi = np.searchsorted(starts, p_end - 1, side="right")
    lo = np.maximum(lo, 0)
    hi = np.where(p_end > p_start, hi, lo)
    pieces, tokens = expand_ranges(lo, hi)
    return ragged_by_token(pieces, tokens, n_tokens), np.zeros(0, dtype=np.int64)
