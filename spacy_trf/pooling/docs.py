"""Rows of pieces -> one row per doc: the class token's rows or the mean of the pieces."""

from collections.abc import Callable

from thinc.api import Model
from thinc.types import Floats2d

from ..stitch import LayerRows, RowsGradient
from .tokens import init_width

DOC_POOLINGS = ("cls", "mean")


def DocPooler(pooling: str = "cls") -> Model[list[LayerRows], Floats2d]:
    """One row per doc: the class token's row ("cls", averaged over the doc's windows) or the
    mean over the doc's pieces ("mean"). Empty docs get a zero row."""
    if pooling not in DOC_POOLINGS:
        raise ValueError(f"pooling must be one of {DOC_POOLINGS}, got {pooling!r}.")
    return Model(
        "spacy-trf.DocPooler",
        _doc_forward,
        init=init_width,
        dims={"nO": None},
        attrs={"pooling": pooling},
    )


def _doc_forward(
    model: Model, rows: list[LayerRows], is_train: bool
) -> tuple[Floats2d, Callable[[Floats2d], list[RowsGradient]]]:
    ops = model.ops
    use_cls = model.attrs["pooling"] == "cls"
    width = int(rows[0].pieces.shape[1]) if rows else int(model.get_dim("nO") or 0)
    sources = []
    for r in rows:
        if use_cls:
            sources.append(
                r.specials[r.cls_index :: r.n_special] if r.n_special else r.specials[:0]
            )
        else:
            sources.append(r.pieces)
    Y = ops.alloc2f(len(rows), width)
    for i, source in enumerate(sources):
        if len(source):
            Y[i] = source.mean(axis=0)

    def backprop(dY: Floats2d) -> list[RowsGradient]:
        grads = []
        for i, (r, source) in enumerate(zip(rows, sources, strict=True)):
            n = len(source)
            if use_cls:
                d_specials = ops.alloc2f(*r.specials.shape)
                if n:
                    d_specials[r.cls_index :: r.n_special] = dY[i] / n
                grads.append(RowsGradient(d_specials=d_specials))
            else:
                d_pieces = ops.alloc2f(*r.pieces.shape)
                if n:
                    d_pieces += dY[i] / n
                grads.append(RowsGradient(d_pieces=d_pieces))
        return grads

    return Y, backprop
