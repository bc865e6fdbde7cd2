"""Window rows -> piece rows: each window's outputs added back at their pieces and averaged where
windows overlap; special-token rows kept per window. Gradients take the way back.

Shapes: ``n_streams`` is 1 (the last layer) or every hidden state (embeddings + each layer).
"""

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from thinc.api import torch2xp, xp2torch
from thinc.types import Floats2d, Ints1d, Ints2d

from ..windows import WindowBatch, WindowPlan
from .output import DocTransformerGradient, DocTransformerOutput, add_optional

# Per stream: (piece gradient (n_pieces, width), special gradient or None), or None for no gradient.
StreamGradients = list[tuple[torch.Tensor, torch.Tensor | None] | None]


def _t(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).to(device)


@dataclass
class StitchedRows:
    """One call's window outputs, put back in piece order.

    pieces: (n_streams, n_pieces, width), averaged over the windows covering each piece.
    specials: (n_streams, n_windows * n_special, width), window-major.
    attentions: per window (n_layers, n_heads, length, length), or empty when not asked for.
    counts: (n_pieces,) windows covering each piece (at least 1), for the backward pass.
    """

    pieces: torch.Tensor
    specials: torch.Tensor
    attentions: list[Any]
    counts: torch.Tensor

    @classmethod
    def empty(
        cls,
        plan: WindowPlan,
        n_streams: int,
        n_special: int,
        width: int,
        device: torch.device,
        with_attentions: bool,
    ) -> "StitchedRows":
        counts = torch.from_numpy(plan.counts).to(device=device, dtype=torch.float32)
        return cls(
            pieces=torch.zeros((n_streams, plan.n_pieces, width), device=device),
            specials=torch.zeros((n_streams, plan.n_windows * n_special, width), device=device),
            attentions=[None] * plan.n_windows if with_attentions else [],
            counts=counts.clamp_(min=1),
        )

    def add(
        self,
        batch: WindowBatch,
        windows: np.ndarray,
        streams: list[torch.Tensor],
        attentions: tuple[torch.Tensor, ...] | None,
    ) -> None:
        """Add a batch's content rows at their pieces and copy its special rows."""
        device = self.pieces.device
        flat, src = _t(batch.content_flat, device), _t(batch.content_src, device)
        s_flat, dst = _t(batch.special_flat, device), _t(batch.special_dst, device)
        with torch.no_grad():
            for i, stream in enumerate(streams):
                rows = stream.detach().float().reshape(-1, stream.shape[-1])
                self.pieces[i].index_add_(0, src, rows.index_select(0, flat))
                self.specials[i].index_copy_(0, dst, rows.index_select(0, s_flat))
            if self.attentions and attentions:
                lengths = batch.attention_mask.sum(1).tolist()
                stacked = torch.stack([a.detach().float() for a in attentions], dim=1)
                for row, (w, n) in enumerate(zip(windows.tolist(), lengths, strict=True)):
                    self.attentions[w] = torch2xp(stacked[row, :, :, :n, :n].contiguous())

    def average(self) -> None:
        """Divide the summed rows by the windows covering each piece (call once, after add)."""
        if len(self.counts) and float(self.counts.max()) > 1:
            self.pieces /= self.counts[None, :, None]

    def outputs(
        self,
        plan: WindowPlan,
        n_special: int,
        cls_index: int,
        vocab: np.ndarray,
        all_layers: bool,
    ) -> list[DocTransformerOutput]:
        """One ``DocTransformerOutput`` per sequence of the plan."""
        pieces = [cast(Floats2d, torch2xp(stream)) for stream in self.pieces]
        specials = [cast(Floats2d, torch2xp(stream)) for stream in self.specials]
        outputs = []
        for i, seq in enumerate(plan.pieces):
            a, b = plan.piece_range(i)
            wa, wb = plan.window_range(i)
            hidden = [s[a:b] for s in pieces]
            special = [s[wa * n_special : wb * n_special] for s in specials]
            ranges = np.stack([plan.starts[wa:wb] - a, plan.ends[wa:wb] - a], axis=1)
            outputs.append(
                DocTransformerOutput(
                    piece_ids=cast(Ints1d, seq.ids),
                    piece_offsets=cast(Ints2d, seq.offsets),
                    align=seq.align,
                    last_hidden_state=hidden[-1],
                    special_hidden_state=special[-1],
                    window_ranges=cast(Ints2d, ranges),
                    n_special=n_special,
                    hidden_states=hidden if all_layers else None,
                    special_hidden_states=special if all_layers else None,
                    attentions=self.attentions[wa:wb] if self.attentions else None,
                    cls_index=cls_index,
                    vocab=vocab,
                )
            )
        return outputs


def gather_gradients(
    plan: WindowPlan,
    d_outputs: list[DocTransformerGradient],
    rows: StitchedRows,
    n_special: int,
) -> StreamGradients:
    """Per stream, the per-doc gradients concatenated in piece order and divided among the
    windows sharing each piece."""
    n_streams, _, width = rows.pieces.shape
    device = rows.pieces.device
    result: StreamGradients = []
    for i in range(n_streams):
        last = i == n_streams - 1
        parts = [_stream_part(d.d_hidden_states, d.d_last_hidden_state, i, last) for d in d_outputs]
        specials = [
            _stream_part(d.d_special_hidden_states, d.d_special_hidden_state, i, last)
            for d in d_outputs
        ]
        if all(x is None for x in parts) and all(x is None for x in specials):
            result.append(None)
            continue
        g_pieces = torch.zeros((plan.n_pieces, width), device=device)
        for doc_i, part in enumerate(parts):
            if part is not None:
                a, b = plan.piece_range(doc_i)
                g_pieces[a:b] = xp2torch(part, device=device)
        g_pieces /= rows.counts[:, None]
        g_special = None
        if any(x is not None for x in specials):
            g_special = torch.zeros((plan.n_windows * n_special, width), device=device)
            for doc_i, part in enumerate(specials):
                if part is not None:
                    wa, wb = plan.window_range(doc_i)
                    g_special[wa * n_special : wb * n_special] = xp2torch(part, device=device)
        result.append((g_pieces, g_special))
    return result


def _stream_part(
    layers: list[Floats2d | None] | None, last_layer: Floats2d | None, i: int, last: bool
) -> Floats2d | None:
    part = layers[i] if layers is not None else None
    if last and last_layer is not None:
        part = add_optional(part, last_layer)
    return part


def window_gradient(
    batch: WindowBatch, stream: torch.Tensor, g_pieces: torch.Tensor, g_special: torch.Tensor | None
) -> torch.Tensor:
    """The gradient of a batch's output ``stream`` from stitched piece and special gradients
    (already divided among the windows sharing each piece); padding gets zero."""
    device = stream.device
    g = torch.zeros_like(stream)
    g_rows = g.view(-1, g.shape[-1])
    flat, src = _t(batch.content_flat, device), _t(batch.content_src, device)
    g_rows.index_copy_(0, flat, g_pieces.index_select(0, src).to(g.dtype))
    if g_special is not None:
        s_flat, dst = _t(batch.special_flat, device), _t(batch.special_dst, device)
        g_rows.index_copy_(0, s_flat, g_special.index_select(0, dst).to(g.dtype))
    return g
