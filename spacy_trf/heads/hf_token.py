"""A fine-tuned Hugging Face token classifier on spaCy tokens: the model's logits per piece (over
strided windows, never truncated) -> softmax -> one distribution per token through the alignment.
"""

from collections.abc import Callable
from typing import Any, cast

from spacy.tokens import Doc
from thinc.api import Model, chain, reduce_first, reduce_mean
from thinc.types import Floats2d, Ints1d, Ragged

from ..encoder import EncoderOptions
from ..models.transformer import transformer_model
from ..pieces import SpanGetter
from ..pooling import EncoderRows, TokenPooler
from ..stitch import LayerRows, RowsGradient

AGGREGATIONS = ("first", "average", "max")


def HFTokenClassifier(
    name: str,
    get_spans: SpanGetter,
    aggregation: str,
    window: int,
    stride: int,
    tokenizer_config: dict[str, Any],
    transformer_config: dict[str, Any],
) -> Model[list[Doc], list[Floats2d]]:
    """Per doc, one row of label probabilities per spaCy token, from the model ``name``
    (an ``AutoModelForTokenClassification``; loaded at initialize).

    aggregation: how a token's pieces make its distribution, as transformers' pipeline does for
        words: "first" (the first piece's), "average" (the mean of its pieces') or "max" (that of
        the piece with the most confident label). Tokens without pieces get a zero row.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}.")
    encoder = transformer_model(
        name, get_spans, window, stride, tokenizer_config, transformer_config,
        EncoderOptions(), head="token",
    )  # fmt: skip
    reducer: Model[Ragged, Floats2d] = {
        "first": reduce_first,
        "average": reduce_mean,
        "max": reduce_most_confident,
    }[aggregation]()
    model: Model = chain(encoder, EncoderRows("last"), PieceSoftmax(), TokenPooler(reducer))
    model.set_ref("encoder", encoder)
    model.name = "spacy-trf.HFTokenClassifier"
    return model


def PieceSoftmax() -> Model[list[LayerRows], list[LayerRows]]:
    """Each piece row's logits -> probabilities (the special rows are left as they are)."""
    return Model("spacy-trf.PieceSoftmax", _softmax_forward)


def _softmax_forward(
    model: Model, rows: list[LayerRows], is_train: bool
) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], list[RowsGradient]]]:
    ops = model.ops
    probs = [ops.softmax(r.pieces) if len(r.pieces) else r.pieces for r in rows]
    out = [
        LayerRows(p, r.specials, r.align, r.n_special, r.cls_index)
        for p, r in zip(probs, rows, strict=True)
    ]

    def backprop(d_rows: list[RowsGradient]) -> list[RowsGradient]:
        grads = []
        for p, d in zip(probs, d_rows, strict=True):
            d_logits = None
            if d.d_pieces is not None:
                dp = d.d_pieces
                d_logits = p * (dp - (p * dp).sum(axis=1, keepdims=True))
            grads.append(RowsGradient(d_pieces=cast(Floats2d, d_logits)))
        return grads

    return out, backprop


def reduce_most_confident() -> Model[Ragged, Floats2d]:
    """Per group, the row whose largest value is the largest of the group (transformers'
    "max" word aggregation); the gradient goes to that row."""
    return Model("spacy-trf.reduce_most_confident", _confident_forward)


def _confident_forward(
    model: Model, X: Ragged, is_train: bool
) -> tuple[Floats2d, Callable[[Floats2d], Ragged]]:
    ops, xp = model.ops, model.ops.xp
    data = cast(Floats2d, X.dataXd)
    lengths = X.lengths
    _, which = ops.reduce_max(cast(Floats2d, data.max(axis=1)[:, None]), lengths)
    starts = xp.concatenate([xp.zeros(1, dtype="i"), xp.cumsum(lengths)[:-1]])
    rows = (starts + which[:, 0]).astype("i")
    Y = data[rows]

    def backprop(dY: Floats2d) -> Ragged:
        d_data = ops.alloc2f(*data.shape)
        d_data[rows] = dY
        return Ragged(d_data, cast(Ints1d, lengths))

    return Y, backprop
