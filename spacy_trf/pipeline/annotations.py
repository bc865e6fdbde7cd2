"""Annotation setters: what the trf component writes onto Docs beyond ``doc._.trf``.

``spacy-trf.doc_tensor.v1`` sets ``doc.tensor`` (one row per token) without losing information:
every piece row is split evenly among the tokens it aligns to; special-token rows (and the rare
piece that aligns to no token) are split evenly among the tokens of their window. So
``doc.tensor.sum(0) == last_hidden_state.sum(0) + special_hidden_state.sum(0)``. It also installs
the ``.vector`` / ``.similarity`` hooks of ``vectors.py``.
"""

from collections.abc import Callable

import numpy as np
from spacy.tokens import Doc
from thinc.util import to_numpy

from ..align import expand_ranges
from ..registry import annotation_setters
from ..stitch import DocTransformerOutput
from .vectors import WEIGHT_KEY, install_vector_hooks

AnnotationSetter = Callable[[list[Doc], list[DocTransformerOutput]], None]


@annotation_setters("spacy-trf.null_annotation_setter.v1")
def configure_null_annotation_setter() -> AnnotationSetter:
    """Set nothing beyond doc._.trf."""

    def null_annotation_setter(docs: list[Doc], outputs: list[DocTransformerOutput]) -> None:
        return None

    return null_annotation_setter


@annotation_setters("spacy-trf.doc_tensor.v1")
def configure_doc_tensor() -> AnnotationSetter:
    """Set doc.tensor from the encoder output and install vector/similarity hooks."""

    def set_doc_tensor(docs: list[Doc], outputs: list[DocTransformerOutput]) -> None:
        for doc, output in zip(docs, outputs, strict=True):
            tensor, weight = token_tensor(output, len(doc))
            doc.tensor = tensor
            doc.user_data[WEIGHT_KEY] = weight
            install_vector_hooks(doc)

    return set_doc_tensor


def token_tensor(output: DocTransformerOutput, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Distribute piece and special rows over tokens: (tensor, weight) with one row per token.

    ``weight[i]`` is how many rows' worth of mass token i received.
    """
    hidden = to_numpy(output.last_hidden_state).astype(np.float32, copy=False)
    special = to_numpy(output.special_hidden_state).astype(np.float32, copy=False)
    n_pieces, width = hidden.shape
    tensor = np.zeros((n_tokens, width), dtype=np.float32)
    weight = np.zeros((n_tokens,), dtype=np.float32)
    if n_tokens == 0:
        return tensor, weight
    lengths = to_numpy(output.align.lengths).astype(np.int64)
    pair_piece = to_numpy(output.align.dataXd).astype(np.int64).ravel()
    has = lengths > 0
    tok_ids = np.flatnonzero(has)
    starts = (np.cumsum(lengths) - lengths)[has]
    owners = np.bincount(pair_piece, minlength=n_pieces)  # tokens each piece aligns to
    share = (1.0 / owners[pair_piece]).astype(np.float32)
    if len(pair_piece):  # pairs are grouped by token, so segment sums do it in one pass
        tensor[tok_ids] = np.add.reduceat(hidden[pair_piece] * share[:, None], starts, axis=0)
        weight[tok_ids] = np.add.reduceat(share, starts)

    # Rows no token owns: specials of each window, and unaligned pieces (first window holding them).
    ranges = np.asarray(output.window_ranges, dtype=np.int64).reshape(-1, 2)
    n_windows = len(ranges)
    if n_windows == 0:
        return tensor, weight
    leftover = (
        special.reshape(n_windows, -1, width).sum(1)
        if output.n_special
        else np.zeros((n_windows, width), dtype=np.float32)
    )
    left_count = np.full(n_windows, float(output.n_special))
    unaligned = np.flatnonzero(owners == 0)
    if len(unaligned):
        owner = np.searchsorted(ranges[:, 0], unaligned, side="right") - 1
        np.add.at(leftover, owner, hidden[unaligned])
        np.add.at(left_count, owner, 1.0)
    # Tokens of a window: those whose aligned pieces fall within it.
    first = pair_piece[starts]
    last = pair_piece[starts + lengths[has] - 1]
    w_lo = np.searchsorted(ranges[:, 1], first, side="right")
    w_hi = np.searchsorted(ranges[:, 0], last, side="right")
    tok_pos, win = expand_ranges(w_lo, w_hi)
    members = np.bincount(win, minlength=n_windows).astype(np.float64)
    orphan = members == 0
    members[orphan] = 1.0
    np.add.at(tensor, tok_ids[tok_pos], (leftover / members[:, None].astype(np.float32))[win])
    np.add.at(weight, tok_ids[tok_pos], (left_count / members)[win])
    if orphan.any():  # windows holding no token's pieces: spread over the whole doc
        tensor += leftover[orphan].sum(0) / n_tokens
        weight += left_count[orphan].sum() / n_tokens
    return tensor, weight
