"""Listeners: downstream components share one ``trf`` encoder instead of owning a copy.

While training, the ``trf`` component runs the encoder once per batch and hands the outputs to
every listener (``receive``); each listener's backprop returns its gradient to the component,
which runs one backward for all of them. At prediction, listeners read ``doc._.trf``.
"""

from collections.abc import Callable
from typing import Any

from spacy.tokens import Doc
from thinc.api import Model, chain

from ..encoder import configure_encoder, is_encoder
from ..pooling import (
    EncoderRows,
    GradFactor,
    Layers,
    TokenPooler,
    check_layers,
    needs_hidden_states,
)
from ..registry import architectures
from ..stitch import DocTransformerGradient, DocTransformerOutput
from ..types import DocsToOutputsModelT, DocsToTokensModelT, PoolingModelT

Backprop = Callable[[list[DocTransformerGradient]], Any]


class EncoderListener(Model):
    """A placeholder for the encoder's output inside a downstream component's model."""

    name = "spacy-trf.TransformerListener"

    def __init__(self, upstream_name: str, needs_hidden_states: bool = False) -> None:
        super().__init__(self.name, _listener_forward, init=_listener_init)
        self.upstream_name = upstream_name
        self.needs_hidden_states = needs_hidden_states
        self.upstream: Model | None = None  # the encoder model, set when the pipeline is linked
        self._batch_id: tuple[tuple[int, int], ...] | None = None
        self._outputs: list[DocTransformerOutput] | None = None
        self._backprop: Backprop | None = None

    @staticmethod
    def get_batch_id(docs: list[Doc]) -> tuple[tuple[int, int], ...]:
        """Identify a batch by its Doc objects (the same objects flow through nlp.update)."""
        return tuple((id(doc), len(doc)) for doc in docs)

    def receive(
        self,
        batch_id: tuple[tuple[int, int], ...],
        outputs: list[DocTransformerOutput],
        backprop: Backprop,
    ) -> None:
        """Store the encoder's output for a training batch, and where its gradient goes."""
        self._batch_id = batch_id
        self._outputs = outputs
        self._backprop = backprop

    def _received(self, docs: list[Doc]) -> bool:
        """Whether docs are the batch last received: the same Doc objects, carrying the same
        outputs (Doc ids alone can be reused once an earlier batch is freed)."""
        if self._batch_id is None or self._outputs is None:
            return False
        if self._batch_id != self.get_batch_id(docs):
            return False
        return all(doc._.trf is out for doc, out in zip(docs, self._outputs, strict=True))


def _no_backprop(d_outputs: list[DocTransformerGradient]) -> list:
    return []


def _listener_forward(
    model: EncoderListener, docs: list[Doc], is_train: bool
) -> tuple[list[DocTransformerOutput], Backprop]:
    if is_train and model._received(docs):
        assert model._outputs is not None and model._backprop is not None
        return model._outputs, model._backprop
    outputs = [doc._.trf for doc in docs]
    if any(out is None for out in outputs):
        raise ValueError(
            f"A listener of the transformer component '{model.upstream_name}' found no encoder "
            "output on the docs (doc._.trf is None): that component is disabled, absent or runs "
            "after this one. Enable it, put it earlier in the pipeline, or give this component "
            "its own encoder with nlp.replace_listeners."
            + (
                " While training with a frozen transformer in [training.frozen_components], "
                "also list it in [training.annotating_components]."
                if is_train
                else ""
            )
        )
    return outputs, _no_backprop


def _listener_init(model: EncoderListener, X: list[Doc] | None = None, Y: Any = None) -> None:
    # Downstream layers infer their input widths from a sample: encode it if needed.
    if not X:
        return
    missing = [doc for doc in X if doc._.trf is None]
    if not missing:
        return
    if model.upstream is None:
        raise ValueError(
            f"This component listens to a transformer component named '{model.upstream_name}', "
            "but none was found earlier in the pipeline: add a 'trf' component before it (or set "
            "the listener's upstream to its name)."
        )
    for doc, out in zip(missing, model.upstream.predict(missing), strict=True):
        doc._.trf = out


@architectures("spacy-trf.TransformerOutputListener.v1")
def TransformerOutputListener(
    upstream: str = "*",
) -> DocsToOutputsModelT:
    """The encoder's raw per-doc outputs (``DocTransformerOutput``), for custom heads.

    upstream (str): Name of the trf component to listen to; "*" for any.
    """
    return EncoderListener(upstream)


@architectures("spacy-trf.TransformerListener.v1")
def TransformerListener(
    pooling: PoolingModelT,
    grad_factor: GradFactor = 1.0,
    layers: Layers = "last",
    upstream: str = "*",
) -> DocsToTokensModelT:
    """One row per token from a shared trf encoder.

    pooling (Model[Ragged, Floats2d]): Reduces a token's pieces, e.g. reduce_mean.v1.
    grad_factor (float | schedule): Scales the gradient to the encoder; 0 stops it.
    layers ("last" | list[int] | "scalar_mix"): Which hidden states to use.
    upstream (str): Name of the trf component to listen to; "*" for any.
    """
    layers = check_layers(layers)
    listener = EncoderListener(upstream, needs_hidden_states=needs_hidden_states(layers))
    return tokens_from(listener, pooling, grad_factor, layers)


def tokens_from(
    encoder: DocsToOutputsModelT, pooling: PoolingModelT, grad_factor: GradFactor, layers: Layers
) -> DocsToTokensModelT:
    """encoder -> layer selection or mix -> token pooling."""
    model: Model = chain(encoder, EncoderRows(layers, grad_factor), TokenPooler(pooling))
    model.name = "spacy-trf.TokenVectors"
    return model


def request_all_layers(model: Model) -> None:
    """Ask the encoders under ``model`` for every layer's hidden states: listeners pass the
    request to their trf component when the pipeline is linked; owned encoders take it now."""
    for node in model.walk():
        if isinstance(node, EncoderListener):
            node.needs_hidden_states = True
        elif is_encoder(node):
            configure_encoder(node, output_hidden_states=True)
