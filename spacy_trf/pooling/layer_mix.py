"""Encoder output -> one layer of rows per doc: the last layer, an average of layers, or a
learned scalar mix (Peters et al. 2018), with the gradient to the encoder scaled by grad_factor.
"""

from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from typing import Any, cast

from thinc.api import Model
from thinc.types import Floats1d, Floats2d

from ..stitch import (
    DocTransformerGradient,
    DocTransformerOutput,
    LayerRows,
    RowsGradient,
    add_optional,
)

Layers = str | list[int]
GradFactor = float | Iterable[float]


def check_layers(layers: Any) -> Layers:
    """Validate a ``layers`` setting: "last", "scalar_mix" or a non-empty list of indices."""
    if layers in ("last", "scalar_mix"):
        return cast(str, layers)
    if (
        isinstance(layers, list | tuple)
        and layers
        and all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
    ):
        return list(layers)
    raise ValueError(
        f'layers must be "last", "scalar_mix" or a non-empty list of layer indices (0 = '
        f"embeddings, -1 = last layer, as in Hugging Face's hidden_states); got {layers!r}."
    )


def needs_hidden_states(layers: Layers) -> bool:
    return layers != "last"


def grad_factor_series(grad_factor: GradFactor) -> Iterator[float]:
    """An endless series of factors: a constant, or a Thinc schedule (one value per update)."""
    if isinstance(grad_factor, int | float) and not isinstance(grad_factor, bool):
        return repeat(float(grad_factor))
    if isinstance(grad_factor, Iterable):
        return iter(grad_factor)
    raise ValueError(
        f"grad_factor must be a number or a schedule (e.g. constant_then.v1), got {grad_factor!r}."
    )


def EncoderRows(
    layers: Layers = "last", grad_factor: GradFactor = 1.0, layer_dropout: float = 0.1
) -> Model[list[DocTransformerOutput], list[LayerRows]]:
    """Select or mix the encoder's layers; scale the gradient that flows back to the encoder.

    layers: "last", a list of hidden-state indices (averaged), or "scalar_mix".
    grad_factor: Multiplies the encoder's gradient (0 stops it: the encoder gets no backward
        from this consumer). A Thinc schedule gives one factor per training update.
    layer_dropout: For scalar_mix while training, the chance of dropping each layer.
    """
    layers = check_layers(layers)
    factors = grad_factor_series(grad_factor)
    # The schedule is a generator: kept in a closure, since Model attrs must serialize.

    def forward(
        model: Model, outputs: list[DocTransformerOutput], is_train: bool
    ) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], list[DocTransformerGradient]]]:
        factor = next(factors) if is_train else 1.0
        return _forward(model, outputs, is_train, factor)

    return Model(
        "spacy-trf.EncoderRows",
        forward,
        init=_init,
        dims={"nL": None},
        params={"weights": None, "scale": None},
        attrs={"layers": layers, "layer_dropout": layer_dropout},
    )


def _init(model: Model, X: list[DocTransformerOutput] | None = None, Y: Any = None) -> None:
    if X:
        _init_mix(model, X[0])


def _init_mix(model: Model, out: DocTransformerOutput) -> None:
    if model.attrs["layers"] != "scalar_mix" or model.has_param("weights"):
        return
    hidden = _hidden(model, out)
    model.set_dim("nL", len(hidden), force=True)
    model.set_param("weights", model.ops.alloc1f(len(hidden)))
    model.set_param("scale", model.ops.asarray1f([1.0]))


def _hidden(model: Model, out: DocTransformerOutput) -> list[Floats2d]:
    if out.hidden_states is None or out.special_hidden_states is None:
        raise ValueError(
            f"layers={model.attrs['layers']!r} needs every layer's hidden states, but the encoder "
            "returned only the last one: set output_hidden_states = true on the trf model "
            "(listeners ask for it when the pipeline is linked)."
        )
    return out.hidden_states


def _forward(
    model: Model, outputs: list[DocTransformerOutput], is_train: bool, factor: float
) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], list[DocTransformerGradient]]]:
    layers = model.attrs["layers"]
    if layers == "last":
        return last_layer_rows(outputs, factor)
    if layers == "scalar_mix":
        return _scalar_mix(model, outputs, is_train, factor)
    return _average(model, outputs, layers, factor)


def last_layer_rows(
    outputs: list[DocTransformerOutput], factor: float
) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], list[DocTransformerGradient]]]:
    """The last layer's rows; the gradient back to the encoder is scaled by ``factor``."""
    rows = [_rows(o, o.last_hidden_state, o.special_hidden_state) for o in outputs]

    def backprop(d_rows: list[RowsGradient]) -> list[DocTransformerGradient]:
        return [
            DocTransformerGradient(
                d_last_hidden_state=_scaled(d.d_pieces, factor),
                d_special_hidden_state=_scaled(d.d_specials, factor),
            )
            for d in d_rows
        ]

    return rows, backprop


def _rows(out: DocTransformerOutput, pieces: Floats2d, specials: Floats2d) -> LayerRows:
    return LayerRows(pieces, specials, out.align, out.n_special, out.cls_index)


def _scaled(d: Floats2d | None, factor: float) -> Floats2d | None:
    return None if d is None or factor == 0.0 else (d if factor == 1.0 else d * factor)


def _average(
    model: Model, outputs: list[DocTransformerOutput], layers: list[int], factor: float
) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], list[DocTransformerGradient]]]:
    rows = []
    n_layers = 0
    for out in outputs:
        hidden = _hidden(model, out)
        specials = cast(list[Floats2d], out.special_hidden_states)
        n_layers = len(hidden)
        bad = [i for i in layers if not -n_layers <= i < n_layers]
        if bad:
            raise ValueError(
                f"layers {bad} are out of range: the encoder has {n_layers} hidden states "
                f"(indices 0..{n_layers - 1}, or negative from the end)."
            )
        pieces = sum(hidden[i] for i in layers) / len(layers)
        special = sum(specials[i] for i in layers) / len(layers)
        rows.append(_rows(out, cast(Floats2d, pieces), cast(Floats2d, special)))
    share = factor / len(layers)

    def backprop(d_rows: list[RowsGradient]) -> list[DocTransformerGradient]:
        grads = []
        for d in d_rows:
            d_hidden: list[Floats2d | None] = [None] * n_layers
            d_special: list[Floats2d | None] = [None] * n_layers
            if factor != 0.0:
                for i in layers:
                    d_hidden[i] = add_optional(d_hidden[i], _scaled(d.d_pieces, share))
                    d_special[i] = add_optional(d_special[i], _scaled(d.d_specials, share))
            grads.append(
                DocTransformerGradient(d_hidden_states=d_hidden, d_special_hidden_states=d_special)
            )
        return grads

    return rows, backprop


def _scalar_mix(
    model: Model, outputs: list[DocTransformerOutput], is_train: bool, factor: float
) -> tuple[list[LayerRows], Callable[[list[RowsGradient]], list[DocTransformerGradient]]]:
    if not outputs:
        return [], lambda d_rows: []
    _init_mix(model, outputs[0])
    ops, xp = model.ops, model.ops.xp
    weights = cast(Floats1d, model.get_param("weights"))
    scale = float(model.get_param("scale")[0])
    n_layers = len(weights)
    logits = weights
    if is_train and model.attrs["layer_dropout"] > 0:
        keep = xp.random.uniform(size=n_layers) >= model.attrs["layer_dropout"]
        if not keep.any():
            keep[xp.random.randint(n_layers)] = True
        logits = xp.where(keep, weights, -xp.inf)
    probs = xp.exp(logits - logits.max())
    probs = probs / probs.sum()
    stacks = []
    rows = []
    for out in outputs:
        hidden = xp.stack(_hidden(model, out))  # (n_layers, n_pieces, width)
        special = xp.stack(cast(list[Floats2d], out.special_hidden_states))
        if len(hidden) != n_layers:
            raise ValueError(
                f"scalar_mix was set up for {n_layers} layers; this encoder returns {len(hidden)}."
            )
        stacks.append((hidden, special))
        mix = scale * xp.tensordot(probs, hidden, axes=1)
        mix_special = scale * xp.tensordot(probs, special, axes=1)
        rows.append(_rows(out, ops.asarray2f(mix), ops.asarray2f(mix_special)))

    def backprop(d_rows: list[RowsGradient]) -> list[DocTransformerGradient]:
        dots = xp.zeros(n_layers, dtype="f")  # <h_i, d> summed over docs: what each weight sees
        grads = []
        for (hidden, special), d in zip(stacks, d_rows, strict=True):
            per_doc: list[list[Floats2d | None]] = []
            for stack, grad in ((hidden, d.d_pieces), (special, d.d_specials)):
                if grad is None:
                    per_doc.append([None] * n_layers)
                    continue
                dots += xp.tensordot(stack, grad, axes=([1, 2], [0, 1]))
                if factor == 0.0:
                    per_doc.append([None] * n_layers)
                else:
                    weights_i = probs * (scale * factor)
                    per_doc.append([grad * float(w) if w else None for w in weights_i.tolist()])
            grads.append(
                DocTransformerGradient(
                    d_hidden_states=per_doc[0], d_special_hidden_states=per_doc[1]
                )
            )
        d_probs = dots * scale
        d_weights = probs * (d_probs - (d_probs * probs).sum())
        model.inc_grad("weights", ops.asarray1f(d_weights))
        model.inc_grad("scale", ops.asarray1f([float((dots * probs).sum())]))
        return grads

    return rows, backprop
