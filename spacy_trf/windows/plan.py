"""Pieces -> windows: where every window of every sequence starts and ends.

Each span's pieces are cut into windows of at most ``window`` pieces, starting every ``stride``
pieces; the last window is shifted back to end on the span's last piece, so every window is full
when the span is long enough.
"""

from dataclasses import dataclass

import numpy as np

from ..align import expand_ranges
from ..pieces import DocPieces, SpecialTemplate
from .batch import WindowBatch, build_batch, make_batches


def make_windows(
    span_lengths: np.ndarray, window: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Window [start, end) ranges, in piece indices of the concatenated spans, in order."""
    span_lengths = np.asarray(span_lengths, dtype=np.int64)
    offsets = np.cumsum(span_lengths) - span_lengths
    n_windows = np.where(
        span_lengths > window, -(-(span_lengths - window) // stride) + 1, (span_lengths > 0) * 1
    )
    span_idx, k = expand_ranges(np.zeros_like(n_windows), n_windows)
    length = span_lengths[span_idx]
    starts = np.minimum(k * stride, np.maximum(length - window, 0))
    ends = np.minimum(starts + window, length)
    return starts + offsets[span_idx], ends + offsets[span_idx]


def piece_counts(starts: np.ndarray, ends: np.ndarray, n_pieces: int) -> np.ndarray:
    """How many windows contain each piece."""
    diff = np.zeros(n_pieces + 1, dtype=np.int64)
    np.add.at(diff, starts, 1)
    np.add.at(diff, ends, -1)
    return np.cumsum(diff[:-1])


@dataclass
class WindowPlan:
    """Where every sequence's pieces and windows sit in a call's concatenated arrays."""

    pieces: list[DocPieces]
    piece_ids: np.ndarray
    doc_piece_start: np.ndarray  # (n_docs + 1,)
    starts: np.ndarray  # (n_windows,) global piece index
    ends: np.ndarray
    doc_window_start: np.ndarray  # (n_docs + 1,)
    counts: np.ndarray  # (n_pieces,) windows covering each piece

    @property
    def n_pieces(self) -> int:
        return int(self.doc_piece_start[-1])

    @property
    def n_windows(self) -> int:
        return len(self.starts)

    def piece_range(self, i: int) -> tuple[int, int]:
        """[start, end) of sequence ``i``'s pieces among the call's pieces."""
        return int(self.doc_piece_start[i]), int(self.doc_piece_start[i + 1])

    def window_range(self, i: int) -> tuple[int, int]:
        """[start, end) of sequence ``i``'s windows among the call's windows."""
        return int(self.doc_window_start[i]), int(self.doc_window_start[i + 1])

    def batches(self, n_special: int, max_batch_pieces: int) -> list[np.ndarray]:
        """The windows grouped into length-sorted batches (lists of window indices)."""
        return make_batches(self.ends - self.starts + n_special, max_batch_pieces)

    def batch(self, windows: np.ndarray, template: SpecialTemplate, pad_id: int) -> WindowBatch:
        """Padded model inputs for some of the plan's windows (indices into starts/ends)."""
        return build_batch(windows, self.starts, self.ends, self.piece_ids, template, pad_id)


def plan_windows(pieces: list[DocPieces], window: int, stride: int) -> WindowPlan:
    """Cut the windows of every sequence's spans and index them for stitching."""
    n_pieces = np.asarray([len(p.ids) for p in pieces], dtype=np.int64)
    doc_piece_start = np.concatenate([[0], np.cumsum(n_pieces)])
    span_lengths = [p.span_lengths for p in pieces]
    all_spans = np.concatenate(span_lengths) if span_lengths else np.zeros(0, dtype=np.int64)
    starts, ends = make_windows(all_spans, window, stride)
    win_doc = np.searchsorted(doc_piece_start, starts, side="right") - 1
    doc_window_start = np.searchsorted(win_doc, np.arange(len(pieces) + 1), side="left")
    ids = [p.ids for p in pieces]
    piece_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    counts = piece_counts(starts, ends, int(doc_piece_start[-1]))
    return WindowPlan(pieces, piece_ids, doc_piece_start, starts, ends, doc_window_start, counts)
