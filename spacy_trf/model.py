"""The encoder architecture: ``List[Doc]`` -> one ``DocTransformerOutput`` per doc.

Doc -> pieces (pieces.py) -> windows and padded batches (windows.py) -> HF model -> piece rows
stitched back per doc (averaged where windows overlap) -> per-doc outputs (output.py).
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import numpy as np
import torch
from spacy.tokens import Doc
from thinc.api import Model, torch2xp, xp2torch
from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler
from thinc.types import Floats2d, Ints1d, Ints2d

from .backends import make_predictor
from .hf import HFShim, load_hf
from .output import DocTransformerGradient, DocTransformerOutput, add_optional
from .pieces import PieceTokenizer
from .registry import architectures
from .spans import SpanGetter
from .windows import WindowBatch, WindowPlan, make_batches, plan_windows

# 16 windows of 128: the raw MiniLM forward on 2 CPU threads ran 4,857 words/s with batches of
# 16 windows against 3,616 with 64 (benchmarks/speed/run.py); larger batches only help GPUs.
DEFAULT_MAX_BATCH_PIECES = 2048


@architectures("spacy-trf.TransformerModel.v1")
def TransformerModel(
    name: str,
    get_spans: SpanGetter,
    window: int = 126,
    stride: int = 110,
    tokenizer_config: dict[str, Any] = {},  # noqa: B006 (read only; spaCy configs pass dicts)
    transformer_config: dict[str, Any] = {},  # noqa: B006
    output_hidden_states: bool = False,
    output_attentions: bool = False,
) -> Model[list[Doc], list[DocTransformerOutput]]:
    """Encode docs with a Hugging Face encoder in strided windows over pieces.

    name (str): Hub id or local directory of the model (loaded at initialize).
    get_spans (Callable): Which spans of each doc to encode, e.g. spacy-trf.doc_spans.v1.
    window (int): Content pieces per window (special tokens come on top).
    stride (int): Pieces between window starts; window - stride pieces overlap.
    tokenizer_config (dict): Keyword arguments for AutoTokenizer.from_pretrained.
    transformer_config (dict): Keyword arguments for AutoModel.from_pretrained.
    output_hidden_states (bool): Also return every layer's hidden states.
    output_attentions (bool): Also return attention weights, per window.
    """
    for key, value in (("window", window), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer number of pieces, got {value!r}.")
    if stride > window:
        raise ValueError(
            f"stride ({stride}) must not exceed window ({window}), or pieces would be skipped."
        )
    if not callable(get_spans):
        raise ValueError(f"get_spans must be a span getter function, got {get_spans!r}.")
    for key, cfg in (
        ("tokenizer_config", tokenizer_config),
        ("transformer_config", transformer_config),
    ):
        if not isinstance(cfg, dict):
            raise ValueError(f"{key} must be a dict of keyword arguments, got {cfg!r}.")
    return Model(
        "spacy-trf.TransformerModel",
        forward,
        init=init,
        shims=[HFShim(tokenizer_config, transformer_config)],
        attrs={
            "name": name,
            "get_spans": get_spans,
            "window": window,
            "stride": stride,
            "tokenizer_config": dict(tokenizer_config),
            "transformer_config": dict(transformer_config),
            "output_hidden_states": output_hidden_states,
            "output_attentions": output_attentions,
            "max_batch_pieces": DEFAULT_MAX_BATCH_PIECES,
            "mixed_precision": False,
            "gradient_checkpointing": False,
        },
    )


def get_shim(model: Model) -> HFShim:
    return cast(HFShim, model.shims[0])


def init(model: Model, X: Any = None, Y: Any = None) -> None:
    """Load the HF model and tokenizer named in the config, unless already loaded."""
    shim = get_shim(model)
    if not shim.loaded:
        hf_model, tokenizer = load_hf(
            model.attrs["name"], model.attrs["tokenizer_config"], model.attrs["transformer_config"]
        )
        shim.set_model(hf_model, tokenizer)
    check_window(model)


def check_window(model: Model) -> None:
    """Raise if a window plus its special tokens exceeds the model's position limit."""
    shim = get_shim(model)
    assert shim.pieces is not None
    limit = max_sequence_length(shim._model, shim.tokenizer)
    needed = model.attrs["window"] + shim.pieces.template.n_special
    if limit is not None and needed > limit:
        raise ValueError(
            f"window={model.attrs['window']} plus {shim.pieces.template.n_special} special tokens "
            f"exceeds the {limit} positions of '{model.attrs['name']}'. Set window <= "
            f"{limit - shim.pieces.template.n_special} (and stride <= window)."
        )


def max_sequence_length(hf_model: torch.nn.Module, tokenizer: Any) -> int | None:
    """The longest input (special tokens included) the model accepts, if it has a limit."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:
        limits.append(tok_max)
    n_pos = getattr(hf_model.config, "max_position_embeddings", None)
    if isinstance(n_pos, int) and n_pos > 0:
        embeddings = getattr(hf_model, "embeddings", None)
        positions = getattr(embeddings, "position_embeddings", None)
        pad = getattr(positions, "padding_idx", None)
        # RoBERTa-style position ids start after the padding index.
        limits.append(n_pos - (pad + 1 if isinstance(pad, int) else 0))
    return min(limits) if limits else None


def forward(
    model: Model, docs: list[Doc], is_train: bool
) -> tuple[list[DocTransformerOutput], Callable[[list[DocTransformerGradient]], list]]:
    shim = get_shim(model)
    if not shim.loaded:
        raise ValueError(
            f"The transformer model '{model.attrs['name']}' is not loaded yet: call "
            "nlp.initialize() (or model.initialize()) first, or load a saved pipeline."
        )
    pieces_tok = cast(PieceTokenizer, shim.pieces)
    hf_model = shim._model
    want_hidden = bool(model.attrs["output_hidden_states"])
    want_attn = bool(model.attrs["output_attentions"])
    if want_attn and getattr(hf_model.config, "_attn_implementation", "eager") != "eager":
        hf_model.set_attn_implementation("eager")  # fused attention kernels return no weights
    n_special = pieces_tok.template.n_special
    p, batches = prepare(model, docs)
    n_windows = len(p.starts)
    device = shim.device
    n_pieces = int(p.doc_piece_start[-1])
    n_streams = hf_model.config.num_hidden_layers + 1 if want_hidden else 1
    width = hf_model.config.hidden_size
    acc = torch.zeros((n_streams, n_pieces, width), device=device)
    special = torch.zeros((n_streams, n_windows * n_special, width), device=device)
    attentions: list[Any] = [None] * n_windows if want_attn else []
    kept: list[tuple[WindowBatch, list[torch.Tensor]]] = []

    # Only pass flags that are on: an explicit False costs time in some transformers models.
    flags = {"output_hidden_states": True} if want_hidden else {}
    if want_attn:
        flags["output_attentions"] = True
    if not getattr(hf_model.config, "return_dict", True):
        flags["return_dict"] = True
    hf_model.train(is_train)
    autocast = _gpu_options(model, shim, hf_model, is_train)
    predict = None if is_train else make_predictor(shim, flags, autocast)
    for windows in batches:
        batch = _build(p, windows, pieces_tok)
        inputs = model_inputs(model, batch)
        if predict is None:
            with torch.enable_grad(), autocast:
                out = hf_model(**inputs, **flags)
            streams = list(out.hidden_states) if want_hidden else [out.last_hidden_state]
            layer_attentions = out.attentions if want_attn else None
            kept.append((batch, streams))
        else:
            streams, layer_attentions = predict(inputs)
        with torch.no_grad():
            stitch(batch, streams, acc, special, device)
            if want_attn:
                assert layer_attentions is not None
                _collect_attentions(batch, windows, layer_attentions, n_special, attentions)

    counts = average_overlaps(p, acc)
    outputs = _split(p, acc, special, attentions, n_special, want_hidden, pieces_tok)

    def backprop(d_outputs: list[DocTransformerGradient]) -> list:
        grads = gather_gradients(p, d_outputs, n_streams, n_special, width, device, counts)
        tensors, grad_tensors = [], []
        for batch, streams in kept:
            for stream, grad in zip(streams, grads, strict=True):
                if grad is not None:
                    tensors.append(stream)
                    grad_tensors.append(window_gradient(batch, stream, *grad))
        if tensors:
            # fp16: scaled here, unscaled once in HFShim.finish_update (after all accumulation).
            torch.autograd.backward(tensors, shim._grad_scaler.scale(grad_tensors))
        return []

    return outputs, backprop


def _gpu_options(
    model: Model, shim: HFShim, hf_model: Any, is_train: bool
) -> AbstractContextManager:
    """mixed_precision and gradient_checkpointing act on CUDA devices only."""
    if shim.device.type != "cuda":
        return nullcontext()
    if (
        is_train
        and model.attrs["gradient_checkpointing"]
        and hf_model.supports_gradient_checkpointing
    ):
        if not hf_model.is_gradient_checkpointing:
            hf_model.gradient_checkpointing_enable({"use_reentrant": False})
    if not model.attrs["mixed_precision"]:
        return nullcontext()
    bf16 = torch.cuda.is_bf16_supported()
    if is_train and not bf16 and not shim._grad_scaler._enabled:
        shim._grad_scaler = PyTorchGradScaler(enabled=True)
        shim._grad_scaler.to_(shim.device)
    return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)


def prepare(model: Model, docs: list[Doc]) -> tuple[WindowPlan, list[np.ndarray]]:
    """Tokenize docs, cut windows and group them into batches (lists of window indices)."""
    pieces_tok = cast(PieceTokenizer, get_shim(model).pieces)
    spans = model.attrs["get_spans"](docs)
    if len(spans) != len(docs):
        raise ValueError(f"The span getter returned {len(spans)} span lists for {len(docs)} docs.")
    pieces = pieces_tok.encode_docs(docs, spans)
    p = plan_windows(pieces, model.attrs["window"], model.attrs["stride"])
    lengths = p.ends - p.starts + pieces_tok.template.n_special
    return p, make_batches(lengths, model.attrs["max_batch_pieces"])


def iter_inputs(model: Model, docs: list[Doc]) -> list[dict[str, torch.Tensor]]:
    """The HF model's forward inputs for docs, batch by batch, exactly as forward builds them."""
    tok = cast(PieceTokenizer, get_shim(model).pieces)
    p, batches = prepare(model, docs)
    return [model_inputs(model, _build(p, windows, tok)) for windows in batches]


def _build(p: WindowPlan, windows: np.ndarray, tok: PieceTokenizer) -> WindowBatch:
    return p.batch(windows, tok.template, tok.pad_id)


def model_inputs(model: Model, batch: WindowBatch) -> dict[str, torch.Tensor]:
    """The keyword arguments of the HF model's forward call for a batch."""
    shim = get_shim(model)
    device = shim.device
    arrays = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "token_type_ids": batch.token_type_ids,
    }
    return {name: _t(arrays[name], device) for name in shim.input_names}


def _t(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).to(device)


def stitch(
    batch: WindowBatch,
    streams: list[torch.Tensor],
    acc: torch.Tensor,
    special: torch.Tensor,
    device: torch.device,
) -> None:
    """Add each window's content rows into ``acc`` (n_streams, n_pieces, width) at their pieces
    (divide by the plan's counts afterwards) and copy its special rows into ``special``."""
    flat, src = _t(batch.content_flat, device), _t(batch.content_src, device)
    s_flat, dst = _t(batch.special_flat, device), _t(batch.special_dst, device)
    for i, stream in enumerate(streams):
        rows = stream.detach().float().reshape(-1, stream.shape[-1])
        acc[i].index_add_(0, src, rows.index_select(0, flat))
        special[i].index_copy_(0, dst, rows.index_select(0, s_flat))


def average_overlaps(p: WindowPlan, acc: torch.Tensor) -> torch.Tensor:
    """Divide stitched rows (n_streams, n_pieces, width) by the windows covering each piece;
    return those counts (at least 1) for the backward pass."""
    counts = torch.from_numpy(p.counts).to(device=acc.device, dtype=acc.dtype).clamp_(min=1)
    if len(p.counts) and p.counts.max() > 1:
        acc /= counts[None, :, None]
    return counts


def window_gradient(
    batch: WindowBatch, stream: torch.Tensor, g_acc: torch.Tensor, g_special: torch.Tensor | None
) -> torch.Tensor:
    """The gradient of a batch's output ``stream`` from stitched piece and special gradients
    (already divided among the windows sharing each piece); padding gets zero."""
    device = stream.device
    g = torch.zeros_like(stream)
    g_rows = g.view(-1, g.shape[-1])
    flat, src = _t(batch.content_flat, device), _t(batch.content_src, device)
    g_rows.index_copy_(0, flat, g_acc.index_select(0, src).to(g.dtype))
    if g_special is not None:
        s_flat, dst = _t(batch.special_flat, device), _t(batch.special_dst, device)
        g_rows.index_copy_(0, s_flat, g_special.index_select(0, dst).to(g.dtype))
    return g


def _collect_attentions(
    batch: WindowBatch,
    windows: np.ndarray,
    layer_attentions: tuple[torch.Tensor, ...],
    n_special: int,
    attentions: list[Any],
) -> None:
    lengths = batch.attention_mask.sum(1)
    stacked = torch.stack([a.detach().float() for a in layer_attentions], dim=1)
    for row, (w, n) in enumerate(zip(windows.tolist(), lengths.tolist(), strict=True)):
        attentions[w] = torch2xp(stacked[row, :, :, :n, :n].contiguous())


def _split(
    p: WindowPlan,
    acc: torch.Tensor,
    special: torch.Tensor,
    attentions: list[Any],
    n_special: int,
    want_hidden: bool,
    tok: PieceTokenizer,
) -> list[DocTransformerOutput]:
    acc_xp = [cast(Floats2d, torch2xp(stream)) for stream in acc]
    special_xp = [cast(Floats2d, torch2xp(stream)) for stream in special]
    outputs = []
    for i, doc_pieces in enumerate(p.pieces):
        a, b = int(p.doc_piece_start[i]), int(p.doc_piece_start[i + 1])
        wa, wb = int(p.doc_window_start[i]), int(p.doc_window_start[i + 1])
        hidden = [s[a:b] for s in acc_xp]
        specials = [s[wa * n_special : wb * n_special] for s in special_xp]
        ranges = np.stack([p.starts[wa:wb] - a, p.ends[wa:wb] - a], axis=1)
        outputs.append(
            DocTransformerOutput(
                piece_ids=cast(Ints1d, doc_pieces.ids),
                piece_offsets=cast(Ints2d, doc_pieces.offsets),
                align=doc_pieces.align,
                last_hidden_state=hidden[-1],
                special_hidden_state=specials[-1],
                window_ranges=cast(Ints2d, ranges),
                n_special=n_special,
                hidden_states=hidden if want_hidden else None,
                special_hidden_states=specials if want_hidden else None,
                attentions=attentions[wa:wb] if attentions else None,
                cls_index=tok.cls_index,
                vocab=tok.vocab,
            )
        )
    return outputs


def gather_gradients(
    p: WindowPlan,
    d_outputs: list[DocTransformerGradient],
    n_streams: int,
    n_special: int,
    width: int,
    device: torch.device,
    counts: torch.Tensor,
) -> list[tuple[torch.Tensor, torch.Tensor | None] | None]:
    """Concatenate per-doc gradients per stream, divided among the windows sharing each piece."""
    n_pieces = int(p.doc_piece_start[-1])
    result: list[tuple[torch.Tensor, torch.Tensor | None] | None] = []
    for i in range(n_streams):
        last = i == n_streams - 1
        parts = []
        for d in d_outputs:
            layer = d.d_hidden_states[i] if d.d_hidden_states is not None else None
            if last and d.d_last_hidden_state is not None:
                layer = add_optional(layer, d.d_last_hidden_state)
            parts.append(layer)
        specials = []
        for d in d_outputs:
            special = (
                d.d_special_hidden_states[i] if d.d_special_hidden_states is not None else None
            )
            if last and d.d_special_hidden_state is not None:
                special = add_optional(special, d.d_special_hidden_state)
            specials.append(special)
        if all(x is None for x in parts) and all(x is None for x in specials):
            result.append(None)
            continue
        g_acc = torch.zeros((n_pieces, width), device=device)
        for doc_i, part in enumerate(parts):
            if part is not None:
                a, b = int(p.doc_piece_start[doc_i]), int(p.doc_piece_start[doc_i + 1])
                g_acc[a:b] = xp2torch(part, device=device)
        g_acc /= counts[:, None]
        g_special = None
        if any(x is not None for x in specials):
            g_special = torch.zeros((int(p.doc_window_start[-1]) * n_special, width), device=device)
            for doc_i, part in enumerate(specials):
                if part is not None:
                    wa, wb = int(p.doc_window_start[doc_i]), int(p.doc_window_start[doc_i + 1])
                    g_special[wa * n_special : wb * n_special] = xp2torch(part, device=device)
        result.append((g_acc, g_special))
    return result
