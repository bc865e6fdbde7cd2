"""Pieces -> windows -> padded batches (pure numpy)."""

from .batch import WindowBatch, build_batch, make_batches
from .plan import WindowPlan, make_windows, piece_counts, plan_windows

__all__ = [
    "WindowBatch",
    "WindowPlan",
    "build_batch",
    "make_batches",
    "make_windows",
    "piece_counts",
    "plan_windows",
]
