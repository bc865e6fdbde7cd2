"""Data classes for the encoder's per-Doc output (``doc._.trf``) and its gradients."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    cls_index: int = 0  # which special row of a window is the class token ([CLS], <s>, <cls>)
    vocab: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object), repr=False)

    @property
    def piece_texts(self) -> list[str]:
        """The pieces as the tokenizer's vocabulary spells them."""
        return [str(t) for t in self.vocab[np.asarray(self.piece_ids)]]

    @property
    def width(self) -> int:
        return int(self.last_hidden_state.shape[1])

    def arrays(self) -> list[Any]:
        """Every array this output holds, each once (the layer lists share the last layer with
        ``last_hidden_state``); not the piece vocabulary, which all outputs share."""
        return list(_distinct(self._array_fields()).values())

    def map_arrays(self, fn: Callable[[Any], Any]) -> "DocTransformerOutput":
        """A copy with ``fn`` applied once to each of ``arrays()`` (arrays shared between fields
        stay shared)."""
        fields = self._array_fields()
        mapped = {key: fn(a) for key, a in _distinct(fields).items()}

        def new(value: Any) -> Any:
            if isinstance(value, list):
                return [mapped[id(a)] for a in value]
            return None if value is None else mapped[id(value)]

        changed: dict[str, Any] = {name: new(value) for name, value in fields.items()}
        align = Ragged(changed.pop("align_data"), changed.pop("align_lengths"))
        return dataclasses.replace(self, align=align, **changed)

    def _array_fields(self) -> dict[str, Any]:
        # Ragged.dataXd makes a new view at each call: read it once.
        names = ["piece_ids", "piece_offsets", "last_hidden_state", "special_hidden_state"]
        names += ["window_ranges", "hidden_states", "special_hidden_states", "attentions"]
        fields = {name: getattr(self, name) for name in names}
        return {**fields, "align_data": self.align.dataXd, "align_lengths": self.align.lengths}

    def token_pieces(self, i: int) -> np.ndarray:
        """Row indices of the pieces aligned to token ``i``."""
        lengths = np.asarray(self.align.lengths)
        start = int(lengths[:i].sum())
        return np.asarray(self.align.dataXd)[start : start + int(lengths[i])]


def _distinct(fields: dict[str, Any]) -> dict[int, Any]:
    arrays = [
        a for v in fields.values() if v is not None for a in (v if isinstance(v, list) else [v])
    ]
    return {id(a): a for a in arrays}


@dataclass
class DocTransformerGradient:
    """Gradients for one Doc's output; None means zero."""

    d_last_hidden_state: Floats2d | None = None
    d_hidden_states: list[Floats2d | None] | None = None
    d_special_hidden_state: Floats2d | None = None
    d_special_hidden_states: list[Floats2d | None] | None = None


def add_gradients(
    a: DocTransformerGradient | None, b: DocTransformerGradient | None
) -> DocTransformerGradient | None:
    """The sum of two gradients for the same Doc (None is zero)."""
    if a is None or b is None:
        return b if a is None else a
    return DocTransformerGradient(
        d_last_hidden_state=add_optional(a.d_last_hidden_state, b.d_last_hidden_state),
        d_hidden_states=_add_lists(a.d_hidden_states, b.d_hidden_states),
        d_special_hidden_state=add_optional(a.d_special_hidden_state, b.d_special_hidden_state),
        d_special_hidden_states=_add_lists(a.d_special_hidden_states, b.d_special_hidden_states),
    )


def _add_lists(
    a: list[Floats2d | None] | None, b: list[Floats2d | None] | None
) -> list[Floats2d | None] | None:
    if a is None or b is None:
        return b if a is None else a
    n = max(len(a), len(b))
    return [add_optional(x, y) for x, y in zip(_pad(a, n), _pad(b, n), strict=True)]


def add_optional(x: Floats2d | None, y: Floats2d | None) -> Floats2d | None:
    """x + y, where None stands for zero."""
    if x is None or y is None:
        return y if x is None else x
    return x + y


def _pad(items: list[Floats2d | None] | None, n: int) -> list[Floats2d | None]:
    items = list(items or [])
    return items + [None] * (n - len(items))


@dataclass
class LayerRows:
    """One layer (or a mix of layers) of one Doc's encoder output, ready for pooling."""

    pieces: Floats2d  # (n_pieces, width)
    specials: Floats2d  # (n_windows * n_special, width)
    align: Ragged  # one entry per token: row indices into pieces
    n_special: int
    cls_index: int


@dataclass
class RowsGradient:
    """Gradients for one Doc's LayerRows; None means zero."""

    d_pieces: Floats2d | None = None
    d_specials: Floats2d | None = None
