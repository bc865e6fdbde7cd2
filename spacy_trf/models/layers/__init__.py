"""Thinc-level layers for your own training loop, without a spaCy pipeline.

Pre-split words -> ``TransformerTokenizer`` (pieces, windows, padding) -> ``TransformerEncoder``
(HF model, stitched piece rows, one pooled row per word) -> your head, e.g. the softmax of
``TransformersTagger``. They share the pipeline's tokenization, windows, alignment and pooling.
"""

from .encoder import TransformerEncoder
from .tagger import TransformersTagger
from .tokenizer import PieceBatch, TransformerTokenizer

__all__ = ["PieceBatch", "TransformerEncoder", "TransformerTokenizer", "TransformersTagger"]
