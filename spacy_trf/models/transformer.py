"""The encoder architecture: ``List[Doc]`` -> one ``DocTransformerOutput`` per doc.

Doc -> spans (span getter) -> pieces -> window plan -> the encoder's one forward path
(encoder/forward.py) -> per-doc outputs.
"""

from collections.abc import Callable
from typing import Any

import torch
from spacy.tokens import Doc
from thinc.api import Model

from .. import defaults
from ..align import Aligner, align_doc
from ..encoder import (
    EncoderOptions,
    HFShim,
    check_window,
    encode,
    encoder_options,
    get_shim,
    iter_batches,
)
from ..pieces import PieceTokenizer, SpanGetter
from ..registry import architectures
from ..stitch import DocTransformerGradient, DocTransformerOutput
from ..types import DocsToOutputsModelT
from ..windows import WindowPlan, plan_windows


@architectures("spacy-trf.TransformerModel.v1")
def TransformerModel(
    name: str,
    get_spans: SpanGetter,
    window: int = defaults.WINDOW,
    stride: int = defaults.STRIDE,
    tokenizer_config: dict[str, Any] = {},  # noqa: B006 (read only; spaCy configs pass dicts)
    transformer_config: dict[str, Any] = {},  # noqa: B006
    output_hidden_states: bool = False,
    output_attentions: bool = False,
) -> DocsToOutputsModelT:
    """Encode docs with a Hugging Face encoder in strided windows over pieces.

    name (str): Hub id or local directory of the model (loaded at initialize).
    get_spans (Callable): Which spans of each doc to encode, e.g. spacy-trf.doc_spans.v1.
    window (int): Content pieces per window (special tokens come on top).
    stride (int): Pieces between window starts; window - stride pieces overlap.
    tokenizer_config (dict): Keyword arguments for AutoTokenizer.from_pretrained.
    transformer_config (dict): Keyword arguments for AutoModel.from_pretrained.
    output_hidden_states (bool): Also return every layer's hidden states.
    output_attentions (bool): Also return attention weights, per window.
    """
    return TransformerModel_v2(
        name, get_spans, window, stride, tokenizer_config, transformer_config,
        output_hidden_states, output_attentions,
    )  # fmt: skip


@architectures("spacy-trf.TransformerModel.v2")
def TransformerModel_v2(
    name: str,
    get_spans: SpanGetter,
    window: int = defaults.WINDOW,
    stride: int = defaults.STRIDE,
    tokenizer_config: dict[str, Any] = {},  # noqa: B006 (read only; spaCy configs pass dicts)
    transformer_config: dict[str, Any] = {},  # noqa: B006
    output_hidden_states: bool = False,
    output_attentions: bool = False,
    alignment: Aligner | None = None,
) -> DocsToOutputsModelT:
    """TransformerModel.v1 with a choice of piece-to-token alignment.

    alignment (Callable | None): How pieces map to tokens: None or spacy-trf.exact_alignment.v1
        (exact), or spacy-trf.st_compat_alignment.v1 (spacy-transformers' rule, for pipelines
        converted by `spacy-trf migrate` only).
    Other arguments as in TransformerModel.v1.
    """
    if alignment is not None and not callable(alignment):
        raise ValueError(
            f"alignment must be an alignment function such as spacy-trf.exact_alignment.v1, "
            f"got {alignment!r}."
        )
    return transformer_model(
        name, get_spans, window, stride, tokenizer_config, transformer_config,
        EncoderOptions(
            output_hidden_states=output_hidden_states, output_attentions=output_attentions
        ),
        aligner=alignment or align_doc,
    )  # fmt: skip


def transformer_model(
    name: str,
    get_spans: SpanGetter,
    window: int,
    stride: int,
    tokenizer_config: dict[str, Any],
    transformer_config: dict[str, Any],
    options: EncoderOptions,
    head: str | None = None,
    aligner: Aligner = align_doc,
) -> DocsToOutputsModelT:
    """TransformerModel's model; with ``head`` ("token" or "sequence") over a model with
    that fine-tuned classification head, whose output rows are then its logits."""
    check_window_setting(window, stride)
    if not callable(get_spans):
        raise ValueError(f"get_spans must be a span getter function, got {get_spans!r}.")
    for key, cfg in (
        ("tokenizer_config", tokenizer_config),
        ("transformer_config", transformer_config),
    ):
        if not isinstance(cfg, dict):
            raise ValueError(f"{key} must be a dict of keyword arguments, got {cfg!r}.")
    return Model(
        "spacy-trf.TransformerModel",
        forward,
        init=init,
        shims=[HFShim(tokenizer_config, transformer_config, options, head)],
        attrs={
            "name": name,
            "get_spans": get_spans,
            "aligner": aligner,
            "window": window,
            "stride": stride,
            "tokenizer_config": dict(tokenizer_config),
            "transformer_config": dict(transformer_config),
        },
    )


def check_window_setting(window: Any, stride: Any) -> None:
    """Raise unless window and stride are positive piece counts with stride <= window."""
    for key, value in (("window", window), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer number of pieces, got {value!r}.")
    if stride > window:
        overlap = defaults.WINDOW - defaults.STRIDE
        raise ValueError(
            f"stride ({stride}) must not exceed window ({window}), or pieces would be skipped: "
            f"lower stride with the window (e.g. stride = {max(1, window - overlap)}; the "
            f"defaults are window {defaults.WINDOW}, stride {defaults.STRIDE})."
        )


def init(model: Model, X: Any = None, Y: Any = None) -> None:
    """Load the HF model and tokenizer named in the config, unless already loaded."""
    get_shim(model).ensure_loaded(model.attrs["name"])
    ready(model)


def ready(model: Model) -> None:
    """Check the window against the loaded model."""
    shim = get_shim(model)
    check_window(shim, shim.pieces, model.attrs["window"], model.attrs["name"])


def forward(
    model: Model, docs: list[Doc], is_train: bool
) -> tuple[list[DocTransformerOutput], Callable[[list[DocTransformerGradient]], list]]:
    shim = get_shim(model)
    shim.require_loaded(model.attrs["name"])
    plan = plan_docs(model, docs)
    outputs, backprop = encode(shim, shim.pieces, plan, encoder_options(model), is_train)

    def backprop_docs(d_outputs: list[DocTransformerGradient]) -> list:
        backprop(d_outputs)
        return []

    return outputs, backprop_docs


def plan_docs(model: Model, docs: list[Doc]) -> WindowPlan:
    """Docs -> spans -> pieces -> the window plan of one call."""
    pieces_tok: PieceTokenizer | None = get_shim(model).pieces
    assert pieces_tok is not None
    spans = model.attrs["get_spans"](docs)
    if len(spans) != len(docs):
        raise ValueError(f"The span getter returned {len(spans)} span lists for {len(docs)} docs.")
    pieces = pieces_tok.encode_docs(docs, spans, model.attrs["aligner"])
    return plan_windows(pieces, model.attrs["window"], model.attrs["stride"])


def iter_inputs(model: Model, docs: list[Doc]) -> list[dict[str, torch.Tensor]]:
    """The HF model's forward inputs for docs, batch by batch, exactly as forward builds them."""
    shim = get_shim(model)
    plan = plan_docs(model, docs)
    options = encoder_options(model)
    return [inputs for _, _, inputs in iter_batches(shim, shim.pieces, plan, options)]


__all__ = [
    "TransformerModel",
    "TransformerModel_v2",
    "check_window_setting",
    "iter_inputs",
    "plan_docs",
    "ready",
    "transformer_model",
]
