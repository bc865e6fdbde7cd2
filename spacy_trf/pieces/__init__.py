"""Doc -> pieces: span getters choose what to encode; the model's own fast tokenizer cuts it into
pieces with character offsets, aligned to spaCy tokens (``align``)."""

from .spans import SpanGetter, configure_doc_spans, configure_sent_spans
from .tokenizer import DocPieces, PieceTokenizer, SpecialTemplate

__all__ = [
    "DocPieces",
    "PieceTokenizer",
    "SpanGetter",
    "SpecialTemplate",
    "configure_doc_spans",
    "configure_sent_spans",
]
