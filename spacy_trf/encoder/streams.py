"""The rows an HF forward's output contributes, as (batch, length, width) streams: every hidden
state or the last one for an encoder; the logits for a model with a classification head."""

from collections.abc import Callable
from typing import Any

import torch

# One backend's prediction: inputs -> (streams, attentions or None)
Predict = Callable[[dict[str, torch.Tensor]], tuple[list[torch.Tensor], Any]]


def output_streams(out: Any, want_hidden: bool, length: int) -> list[torch.Tensor]:
    """The streams of ``out``, a forward over inputs of ``length`` positions.

    A sequence classifier's (batch, n_labels) logits are repeated at every position, so that
    each window's class-token row holds that window's logits; the gradient of the repeat sums
    back onto the logits.
    """
    logits = getattr(out, "logits", None)
    if logits is not None:
        return [logits if logits.dim() == 3 else logits[:, None, :].expand(-1, length, -1)]
    return list(out.hidden_states) if want_hidden else [out.last_hidden_state]
