"""Data classes for the encoder's per-Doc output (``doc._.trf``) and its gradients."""

from dataclasses import dataclass, field

import numpy as np
from thinc.types import Floats2d, Floats4d, Ints1d, Ints2d, Ragged


@dataclass
class DocTransformerOutput:
    """What the encoder produced for one Doc.

    Piece rows are in piece order (span after span), stitched over overlapping windows.
    ``align`` has one entry per token holding row indices into ``last_hidden_state``.
    ``special_hidden_state`` holds, for each window in order, one row per special token
    (prefix specials then suffix specials, e.g. [CLS] then [SEP]).
    """

    piece_ids: Ints1d
    piece_offsets: Ints2d  # (n_pieces, 2) character offsets in doc.text, as the tokenizer gave them
    align: Ragged
    last_hidden_state: Floats2d  # (n_pieces, width)
    special_hidden_state: Floats2d  # (n_windows * n_special, width)
    window_ranges: Ints2d  # (n_windows, 2) [start, end) piece indices of each window
    n_special: int  # special tokens per window
    hidden_states: list[Floats2d] | None = None  # embeddings + every layer, like HF's
    special_hidden_states: list[Floats2d] | None = None
    attentions: list[Floats4d] | None = None  # per window: (n_layers, n_heads, length, length)
    vocab: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object), repr=False)

    @property
    def piece_texts(self) -> list[str]:
        """The pieces as the tokenizer's vocabulary spells them."""
        return [str(t) for t in self.vocab[np.asarray(self.piece_ids)]]

    @property
    def width(self) -> int:
        return int(self.last_hidden_state.shape[1])

    def token_pieces(self, i: int) -> np.ndarray:
        """Row indices of the pieces aligned to token ``i``."""
        lengths = np.asarray(self.align.lengths)
        start = int(lengths[:i].sum())
        return np.asarray(self.align.dataXd)[start : start + int(lengths[i])]


@dataclass
class DocTransformerGradient:
    """Gradients for one Doc's output; None means zero."""

    d_last_hidden_state: Floats2d | None = None
    d_hidden_states: list[Floats2d | None] | None = None
    d_special_hidden_state: Floats2d | None = None
