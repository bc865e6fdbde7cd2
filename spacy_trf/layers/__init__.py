"""Public import path of the Thinc layers (``spacy_trf.models.layers``)."""

from ..models.layers import (
    PieceBatch,
    TransformerEncoder,
    TransformersTagger,
    TransformerTokenizer,
)

__all__ = ["PieceBatch", "TransformerEncoder", "TransformerTokenizer", "TransformersTagger"]
