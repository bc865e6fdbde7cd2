"""Token vectors from an encoder this component owns, and hybrid token features."""

from typing import Any

from thinc.api import Model, concatenate

from .. import defaults
from ..encoder import configure_encoder
from ..pieces import SpanGetter
from ..pooling import GradFactor, Layers, check_layers, needs_hidden_states
from ..registry import architectures
from ..types import DocsToTokensModelT, PoolingModelT
from .listeners import tokens_from
from .transformer import TransformerModel


@architectures("spacy-trf.Tok2VecTransformer.v2")
def Tok2VecTransformer(
    name: str,
    get_spans: SpanGetter,
    pooling: PoolingModelT,
    grad_factor: GradFactor = 1.0,
    layers: Layers = "last",
    window: int = defaults.WINDOW,
    stride: int = defaults.STRIDE,
    tokenizer_config: dict[str, Any] = {},  # noqa: B006 (read only)
    transformer_config: dict[str, Any] = {},  # noqa: B006
    max_batch_pieces: int = defaults.MAX_BATCH_PIECES,
    mixed_precision: bool = False,
    gradient_checkpointing: bool = False,
    learn_rate_scale: float = 1.0,
) -> DocsToTokensModelT:
    """One row per token from an encoder owned by this component (no sharing).

    Takes TransformerModel.v1's settings, the listener's pooling, grad_factor and layers, and
    the trf component's max_batch_pieces, mixed_precision, gradient_checkpointing and
    learn_rate_scale.
    """
    layers = check_layers(layers)
    encoder = TransformerModel(
        name,
        get_spans,
        window=window,
        stride=stride,
        tokenizer_config=tokenizer_config,
        transformer_config=transformer_config,
        output_hidden_states=needs_hidden_states(layers),
    )
    configure_encoder(
        encoder,
        max_batch_pieces=max_batch_pieces,
        mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing,
        learn_rate_scale=learn_rate_scale,
    )
    return tokens_from(encoder, pooling, grad_factor, layers)


@architectures("spacy-trf.Tok2VecTransformer.v1")
def Tok2VecTransformer_v1(
    name: str,
    get_spans: SpanGetter,
    pooling: PoolingModelT,
    grad_factor: GradFactor = 1.0,
    layers: Layers = "last",
    window: int = defaults.WINDOW,
    stride: int = defaults.STRIDE,
    tokenizer_config: dict[str, Any] = {},  # noqa: B006 (read only)
    transformer_config: dict[str, Any] = {},  # noqa: B006
) -> DocsToTokensModelT:
    """Tok2VecTransformer.v2 with the encoder options at their defaults."""
    return Tok2VecTransformer(
        name, get_spans, pooling, grad_factor, layers, window, stride, tokenizer_config,
        transformer_config,
    )  # fmt: skip


@architectures("spacy-trf.HybridTok2Vec.v1")
def HybridTok2Vec(transformer: DocsToTokensModelT, embed: DocsToTokensModelT) -> DocsToTokensModelT:
    """Concatenate the transformer's token rows with other token features, e.g. spaCy's
    MultiHashEmbed over NORM/PREFIX/SUFFIX/SHAPE: the capitalisation that uncased encoders lose.
    """
    model: Model = concatenate(transformer, embed)
    model.name = "spacy-trf.HybridTok2Vec"
    return model
