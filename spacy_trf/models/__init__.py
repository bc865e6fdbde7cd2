"""Architectures: the encoder (``TransformerModel.v1``), listeners that share a ``trf``
component's output, encoders owned by a component, and the Thinc layers (``models.layers``)."""

from .listeners import EncoderListener, TransformerListener, TransformerOutputListener
from .tok2vec import HybridTok2Vec, Tok2VecTransformer
from .transformer import TransformerModel, iter_inputs

__all__ = [
    "EncoderListener",
    "HybridTok2Vec",
    "Tok2VecTransformer",
    "TransformerListener",
    "TransformerModel",
    "TransformerOutputListener",
    "iter_inputs",
]
