"""Windows -> padded batches: the HF model's inputs for a group of windows, and where each
position's row goes back to.

Windows of all docs in a call are sorted by length and grouped into batches whose padded size
stays within ``max_batch_pieces``.
"""

from dataclasses import dataclass

import numpy as np

from ..align import expand_ranges
from ..pieces import SpecialTemplate


def make_batches(lengths: np.ndarray, max_batch_pieces: int) -> list[np.ndarray]:
    """Group window indices, longest first, so that rows x longest length <= max_batch_pieces."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches = []
    i = 0
    while i < len(order):
        size = max(1, max_batch_pieces // max(int(lengths[order[i]]), 1))
        batches.append(order[i : i + size])
        i += size
    return batches


@dataclass
class WindowBatch:
    """Padded model inputs for a batch of windows, and where each row's content comes from."""

    input_ids: np.ndarray  # (B, L) int64
    attention_mask: np.ndarray  # (B, L) int64
    token_type_ids: np.ndarray  # (B, L) int64
    content_rows: np.ndarray  # (n,) batch row of each content position
    content_cols: np.ndarray  # (n,) column of each content position
    content_src: np.ndarray  # (n,) global piece index each content position holds
    special_rows: np.ndarray  # (m,) batch row of each special token
    special_cols: np.ndarray  # (m,) column of each special token
    special_dst: np.ndarray  # (m,) global special-row index (window-major)

    @property
    def content_flat(self) -> np.ndarray:
        """Content positions as row indices into the (B * L, width) flattened output."""
        return self.content_rows * self.input_ids.shape[1] + self.content_cols

    @property
    def special_flat(self) -> np.ndarray:
        return self.special_rows * self.input_ids.shape[1] + self.special_cols


def build_batch(
    windows: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    piece_ids: np.ndarray,
    template: SpecialTemplate,
    pad_id: int,
) -> WindowBatch:
    """Build padded inputs for the given windows (indices into starts/ends), vectorised."""
    n_pre, n_suf = len(template.prefix_ids), len(template.suffix_ids)
    lens = ends[windows] - starts[windows]
    width = (int(lens.max()) if len(lens) else 0) + n_pre + n_suf
    n_rows = len(windows)
    input_ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    type_ids = np.zeros((n_rows, width), dtype=np.int64)
    rows, pos = expand_ranges(np.zeros_like(lens), lens)
    cols = pos + n_pre
    src = starts[windows][rows] + pos
    input_ids[rows, cols] = piece_ids[src]
    type_ids[rows, cols] = template.content_type_id
    input_ids[:, :n_pre] = template.prefix_ids
    type_ids[:, :n_pre] = template.prefix_type_ids
    suf_rows = np.repeat(np.arange(n_rows), n_suf)
    suf_k = np.tile(np.arange(n_suf), n_rows)
    suf_cols = (lens + n_pre)[suf_rows] + suf_k
    input_ids[suf_rows, suf_cols] = template.suffix_ids[suf_k]
    type_ids[suf_rows, suf_cols] = template.suffix_type_ids[suf_k]
    attention_mask = (np.arange(width)[None, :] < (lens + n_pre + n_suf)[:, None]).astype(np.int64)
    pre_rows = np.repeat(np.arange(n_rows), n_pre)
    pre_cols = np.tile(np.arange(n_pre), n_rows)
    n_special = n_pre + n_suf
    special_rows = np.concatenate([pre_rows, suf_rows])
    special_cols = np.concatenate([pre_cols, suf_cols])
    special_k = np.concatenate([pre_cols, n_pre + suf_k])
    special_dst = windows[special_rows] * n_special + special_k
    return WindowBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=type_ids,
        content_rows=rows,
        content_cols=cols,
        content_src=src,
        special_rows=special_rows,
        special_cols=special_cols,
        special_dst=special_dst,
    )
