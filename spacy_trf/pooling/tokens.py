"""Rows of pieces -> one row per token, through the piece <-> token alignment."""

from collections.abc import Callable
from typing import Any, cast

from thinc.api import Model
from thinc.types import Floats2d, Ints1d, Ragged

from ..stitch import LayerRows, RowsGradient


def TokenPooler(
    pooling: Model[Ragged, Floats2d],
) -> Model[list[LayerRows], list[Floats2d]]:
    """Pool each token's pieces into one row with any Thinc ``Model[Ragged, Floats2d]``.

    Tokens without pieces (whitespace) get a zero row and pass back no gradient, so every
    reduction (reduce_first, reduce_max, ...) is safe on them.
    """
    return Model(
        "spacy-trf.TokenPooler",
        _token_forward,
        init=init_width,
        layers=[pooling],
        dims={"nO": None},
    )


def init_width(model: Model, X: list[LayerRows] | None = None, Y: Any = None) -> None:
    """Set the output width ``nO`` from a sample's rows."""
    if X:
        model.set_dim("nO", int(X[0].pieces.shape[1]), force=True)


def _token_forward(
    model: Model, rows: list[LayerRows], is_train: bool
) -> tuple[list[Floats2d], Callable[[list[Floats2d]], list[RowsGradient]]]:
    ops, xp = model.ops, model.ops.xp
    pooling = model.layers[0]
    if not rows:
        return [], lambda dY: []
    width = int(rows[0].pieces.shape[1])
    n_pieces = [len(r.pieces) for r in rows]
    n_tokens = [len(r.align.lengths) for r in rows]
    # Every doc's rows and alignment in one Ragged: one pooling call per batch.
    starts = ops.asarray1i([0, *n_pieces[:-1]]).cumsum()
    index = xp.concatenate(
        [xp.asarray(r.align.dataXd, dtype="i") + int(s) for r, s in zip(rows, starts, strict=True)]
    )
    lengths = xp.concatenate([xp.asarray(r.align.lengths, dtype="i") for r in rows])
    table = xp.concatenate([r.pieces for r in rows]) if sum(n_pieces) else ops.alloc2f(0, width)
    has_pieces = lengths > 0
    Y = ops.alloc2f(len(lengths), width)
    if has_pieces.any():
        pooled, bp_pool = pooling(Ragged(table[index], cast(Ints1d, lengths[has_pieces])), is_train)
        Y[has_pieces] = pooled
    splits = xp.cumsum(xp.asarray(n_tokens))[:-1].tolist()

    def backprop(dY: list[Floats2d]) -> list[RowsGradient]:
        d_table = ops.alloc2f(len(table), width)
        if has_pieces.any():
            d_all = xp.concatenate(dY)
            d_ragged = bp_pool(ops.asarray2f(d_all[has_pieces]))
            ops.scatter_add(d_table, index, cast(Floats2d, d_ragged.dataXd))
        piece_splits = xp.cumsum(xp.asarray(n_pieces))[:-1].tolist()
        return [RowsGradient(d_pieces=d) for d in xp.split(d_table, piece_splits)]

    return xp.split(Y, splits), backprop
