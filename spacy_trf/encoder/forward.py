"""The one forward path of every encoder (the trf component, inline encoders, the Thinc layers):
a window plan -> length-sorted padded batches -> HF model (training: PyTorch with autograd;
prediction: the inference backend) -> rows stitched back per sequence.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from ..pieces import PieceTokenizer
from ..stitch import (
    DocTransformerGradient,
    DocTransformerOutput,
    StitchedRows,
    gather_gradients,
    window_gradient,
)
from ..windows import WindowBatch, WindowPlan
from .backends.bf16 import native_bf16
from .loading import max_sequence_length
from .options import EncoderOptions
from .shim import HFShim
from .streams import output_streams

EncodeBackprop = Callable[[list[DocTransformerGradient]], None]


def encode(
    shim: HFShim,
    tok: PieceTokenizer | None,
    plan: WindowPlan,
    options: EncoderOptions,
    is_train: bool,
) -> tuple[list[DocTransformerOutput], EncodeBackprop]:
    """Run the plan's windows, whose pieces ``tok`` cut, through the model; one
    ``DocTransformerOutput`` per sequence."""
    assert tok is not None
    hf_model = shim.hf_model
    config = hf_model.config
    want_hidden, want_attn = options.output_hidden_states, options.output_attentions
    n_special = tok.template.n_special
    want_hidden = want_hidden and shim.head is None
    n_streams = config.num_hidden_layers + 1 if want_hidden else 1
    rows = StitchedRows.empty(plan, n_streams, n_special, shim.output_width, shim.device, want_attn)
    flags = forward_flags(options, config)
    hf_model.train(is_train)
    autocast = _autocast(options, shim.device)
    predict = None if is_train else shim.predictor(flags, autocast)
    kept: list[tuple[WindowBatch, list[torch.Tensor]]] = []
    for windows, batch, inputs in iter_batches(shim, tok, plan, options):
        if predict is None:
            with torch.enable_grad(), autocast:
                out = hf_model(**inputs, **flags)
            streams = output_streams(out, want_hidden, batch.input_ids.shape[1])
            attentions = out.attentions if want_attn else None
            kept.append((batch, streams))
        else:
            streams, attentions = predict(inputs)
        rows.add(batch, windows, streams, attentions)
    rows.average()
    outputs = rows.outputs(plan, n_special, tok.cls_index, tok.vocab, want_hidden)

    def backprop(d_outputs: list[DocTransformerGradient]) -> None:
        grads = gather_gradients(plan, d_outputs, rows, n_special)
        tensors, grad_tensors = [], []
        for batch, streams in kept:
            for stream, grad in zip(streams, grads, strict=True):
                if grad is not None:
                    tensors.append(stream)
                    grad_tensors.append(window_gradient(batch, stream, *grad))
        shim.backward(tensors, grad_tensors)

    return outputs, backprop


def iter_batches(
    shim: HFShim, tok: PieceTokenizer | None, plan: WindowPlan, options: EncoderOptions
) -> Iterator[tuple[np.ndarray, WindowBatch, dict[str, torch.Tensor]]]:
    """(window indices, padded batch, HF forward inputs) for each batch of the plan."""
    assert tok is not None
    device = shim.device
    for windows in plan.batches(tok.template.n_special, options.max_batch_pieces):
        batch = plan.batch(windows, tok.template, tok.pad_id)
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        yield windows, batch, {n: torch.from_numpy(arrays[n]).to(device) for n in tok.input_names}


def forward_flags(options: EncoderOptions, config: Any) -> dict[str, bool]:
    """The HF forward's flags; only those that are on, since an explicit False costs time in
    some transformers models."""
    flags = {"output_hidden_states": True} if options.output_hidden_states else {}
    if options.output_attentions:
        flags["output_attentions"] = True
    if not getattr(config, "return_dict", True):
        flags["return_dict"] = True
    return flags


def _autocast(options: EncoderOptions, device: torch.device) -> AbstractContextManager:
    """``mixed_precision``: autocast on CUDA (bf16 where supported, else fp16) and on CPUs that
    compute bf16 natively (AMX, AVX512-BF16); fp32 elsewhere, since emulated bf16 is slower."""
    if not options.mixed_precision:
        return nullcontext()
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)
    if device.type == "cpu" and native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def check_window(
    shim: HFShim,
    tok: PieceTokenizer | None,
    window: int,
    name: str,
    where: str = "the trf model",
) -> None:
    """Raise if ``window`` pieces plus ``tok``'s special tokens exceed the model's position
    limit; ``where`` names the setting's place in the message."""
    assert tok is not None
    n_special = tok.template.n_special
    limit = max_sequence_length(shim.hf_model, tok.hf_tokenizer)
    if limit is not None and window + n_special > limit:
        raise ValueError(
            f"window={window} plus {n_special} special tokens exceeds the {limit} positions of "
            f"'{name}'. Set window <= {limit - n_special} (and stride <= window) in {where}."
        )
