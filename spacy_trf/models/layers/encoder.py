"""``PieceBatch`` -> one row per word: the encoder's one forward path (batched, stitched,
on the chosen inference backend), the last layer, pieces pooled per word by TokenPooler."""

from collections.abc import Callable
from typing import Any

from thinc.api import Model, chain, registry
from thinc.types import Floats2d

from ...encoder import (
    HFShim,
    check_window,
    encode,
    encoder_options,
    get_shim,
)
from ...pooling import TokenPooler, last_layer_rows
from ...stitch import LayerRows, RowsGradient
from ...types import PoolingModelT
from .tokenizer import PieceBatch

# Stage contract: pieces and windows -> one row per word.
PiecesToWordsModelT = Model[PieceBatch, list[Floats2d]]


@registry.layers("spacy-trf.TransformerEncoder.v1")
def TransformerEncoder(
    name: str,
    pooling: PoolingModelT,
    transformer_config: dict[str, Any] = {},  # noqa: B006 (read only; configs pass dicts)
) -> PiecesToWordsModelT:
    """Encode a PieceBatch and pool each word's pieces into one row (special tokens dropped).

    name (str): Hub id or local directory of the model (loaded at initialize).
    pooling (Model[Ragged, Floats2d]): How to reduce a word's pieces, e.g. reduce_mean.v1.
    transformer_config (dict): Keyword arguments for AutoModel.from_pretrained.

    Its encoder options (batch budget, mixed precision, ...) are set with
    ``spacy_trf.encoder.configure_encoder(model.layers[0], ...)``, its inference backend with
    ``get_shim(model.layers[0]).set_inference(...)``.
    """
    return chain(HFPieceEncoder(name, transformer_config), TokenPooler(pooling))


def HFPieceEncoder(
    name: str, transformer_config: dict[str, Any]
) -> Model[PieceBatch, list[LayerRows]]:
    """PieceBatch -> the last layer's rows per sequence, through ``encoder.encode``."""
    return Model(
        "spacy-trf.HFPieceEncoder",
        _forward,
        init=_init,
        shims=[HFShim(transformer_config=transformer_config)],
        attrs={"name": name},
    )


def _init(model: Model, X: Any = None, Y: Any = None) -> None:
    get_shim(model).ensure_loaded(model.attrs["name"])


def _forward(
    model: Model, X: PieceBatch, is_train: bool
) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], list]]:
    shim = get_shim(model)
    shim.require_loaded(model.attrs["name"])
    if X.plan.n_windows:
        longest = int((X.plan.ends - X.plan.starts).max())
        check_window(shim, X.pieces, longest, model.attrs["name"], "TransformerTokenizer.v1")
    # The tokenizer layer's pieces, template and vocabulary: the batch was cut with them.
    outputs, backprop = encode(shim, X.pieces, X.plan, encoder_options(model), is_train)
    rows, backprop_rows = last_layer_rows(outputs, 1.0)

    def backprop_batch(d_rows: list[RowsGradient]) -> list:
        backprop(backprop_rows(d_rows))
        return []

    return rows, backprop_batch
