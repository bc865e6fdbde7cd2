"""Stitched outputs -> one layer of rows (last, average or scalar mix) -> one row per token
(through the alignment) or per doc."""

from .docs import DOC_POOLINGS, DocPooler
from .layer_mix import (
    EncoderRows,
    GradFactor,
    Layers,
    check_layers,
    last_layer_rows,
    needs_hidden_states,
)
from .tokens import TokenPooler

__all__ = [
    "DOC_POOLINGS",
    "DocPooler",
    "EncoderRows",
    "GradFactor",
    "Layers",
    "TokenPooler",
    "check_layers",
    "last_layer_rows",
    "needs_hidden_states",
]
