"""``PieceBatch`` -> one row per word: the HF model in Thinc's PyTorchWrapper, windows stitched
back into piece rows, pieces pooled per word with the pipeline's TokenPooler."""

from collections.abc import Callable
from typing import Any, cast

import torch
from thinc.api import ArgsKwargs, Model, chain, registry, torch2xp
from thinc.layers.pytorchwrapper import forward as pytorch_forward
from thinc.types import Floats2d, Ragged

from ..hf import HFShim, load_hf
from ..model import (
    average_overlaps,
    gather_gradients,
    max_sequence_length,
    model_inputs,
    stitch,
    window_gradient,
)
from ..output import DocTransformerGradient, LayerRows, RowsGradient
from ..pooling import TokenPooler
from .tokenizer import PieceBatch


@registry.layers("spacy-trf.TransformerEncoder.v1")
def TransformerEncoder(
    name: str,
    pooling: Model[Ragged, Floats2d],
    transformer_config: dict[str, Any] = {},  # noqa: B006 (read only; configs pass dicts)
) -> Model[PieceBatch, list[Floats2d]]:
    """Encode a PieceBatch and pool each word's pieces into one row (special tokens dropped).

    name (str): Hub id or local directory of the model (loaded at initialize).
    pooling (Model[Ragged, Floats2d]): How to reduce a word's pieces, e.g. reduce_mean.v1.
    transformer_config (dict): Keyword arguments for AutoModel.from_pretrained.
    """
    return chain(HFPieceEncoder(name, transformer_config), TokenPooler(pooling))


def HFPieceEncoder(
    name: str, transformer_config: dict[str, Any]
) -> Model[PieceBatch, list[LayerRows]]:
    """The HF model under Thinc's PyTorchWrapper forward: PieceBatch -> tensors in, last hidden
    state -> one LayerRows per sequence out, and the reverse for gradients."""
    return Model(
        "spacy-trf.HFPieceEncoder",
        _forward,
        init=_init,
        shims=[HFShim(transformer_config=transformer_config)],
        attrs={
            "name": name,
            "convert_inputs": _convert_inputs,
            "convert_outputs": _convert_outputs,
        },
    )


def _shim(model: Model) -> HFShim:
    return cast(HFShim, model.shims[0])


def _init(model: Model, X: Any = None, Y: Any = None) -> None:
    shim = _shim(model)
    if not shim.loaded:
        shim.set_model(*load_hf(model.attrs["name"], transformer_config=shim.transformer_config))


def _forward(
    model: Model, X: PieceBatch, is_train: bool
) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], list]]:
    shim = _shim(model)
    if not shim.loaded:
        raise ValueError(
            f"The model '{model.attrs['name']}' is not loaded: call model.initialize() (or "
            "model.from_disk) first."
        )
    if len(X.plan.starts):
        return pytorch_forward(model, X, is_train)
    # Only empty sequences (or none): no model call, empty rows.
    width = int(shim._model.config.hidden_size)
    empty = model.ops.alloc2f(0, width)
    rows = [LayerRows(empty, empty, seq.align, X.n_special, X.cls_index) for seq in X.plan.pieces]
    return rows, lambda d_rows: []


def _convert_inputs(
    model: Model, X: PieceBatch, is_train: bool
) -> tuple[ArgsKwargs, Callable[[Any], list]]:
    shim = _shim(model)
    limit = max_sequence_length(shim._model, shim.tokenizer)
    if limit is not None and X.input_ids.shape[1] > limit:
        raise ValueError(
            f"Windows of {X.input_ids.shape[1]} tokens exceed the {limit} positions of "
            f"'{model.attrs['name']}': set a smaller window in TransformerTokenizer.v1."
        )
    return ArgsKwargs(args=(), kwargs=model_inputs(model, X.windows)), lambda d_inputs: []


def _convert_outputs(
    model: Model, inputs_outputs: tuple[PieceBatch, Any], is_train: bool
) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], ArgsKwargs]]:
    X, output = inputs_outputs
    hidden: torch.Tensor = output.last_hidden_state
    plan, device, width = X.plan, hidden.device, int(hidden.shape[-1])
    n_special = X.n_special
    acc = torch.zeros((1, int(plan.doc_piece_start[-1]), width), device=device)
    special = torch.zeros((1, len(plan.starts) * n_special, width), device=device)
    stitch(X.windows, [hidden], acc, special, device)
    counts = average_overlaps(plan, acc)
    pieces, specials = cast(Floats2d, torch2xp(acc[0])), cast(Floats2d, torch2xp(special[0]))
    rows = []
    for i, seq in enumerate(plan.pieces):
        a, b = int(plan.doc_piece_start[i]), int(plan.doc_piece_start[i + 1])
        wa, wb = int(plan.doc_window_start[i]), int(plan.doc_window_start[i + 1])
        rows.append(
            LayerRows(
                pieces=pieces[a:b],
                specials=specials[wa * n_special : wb * n_special],
                align=seq.align,
                n_special=n_special,
                cls_index=X.cls_index,
            )
        )

    def convert_d_rows(d_rows: list[RowsGradient]) -> ArgsKwargs:
        d_outputs = [
            DocTransformerGradient(
                d_last_hidden_state=d.d_pieces, d_special_hidden_state=d.d_specials
            )
            for d in d_rows
        ]
        (grad,) = gather_gradients(plan, d_outputs, 1, n_special, width, device, counts)
        d_hidden = (
            torch.zeros_like(hidden) if grad is None else window_gradient(X.windows, hidden, *grad)
        )
        return ArgsKwargs(args=(hidden,), kwargs={"grad_tensors": (d_hidden,)})

    return rows, convert_d_rows
