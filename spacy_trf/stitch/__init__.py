"""Window outputs -> per-Doc outputs: stitching over overlaps, the ``doc._.trf`` data classes,
their gradients and their msgpack codec."""

from . import codec  # noqa: F401  (registers the msgpack codec)
from .output import (
    DocTransformerGradient,
    DocTransformerOutput,
    LayerRows,
    RowsGradient,
    add_gradients,
    add_optional,
)
from .overlaps import StitchedRows, gather_gradients, window_gradient

__all__ = [
    "DocTransformerGradient",
    "DocTransformerOutput",
    "LayerRows",
    "RowsGradient",
    "StitchedRows",
    "add_gradients",
    "add_optional",
    "gather_gradients",
    "window_gradient",
]
