"""Windows -> HF model: loading and saving, the shim that owns the model, the one forward path,
CPU dropout and the inference backends."""

from .forward import check_window, encode, iter_batches
from .loading import ModelLoadError, load_hf, load_tokenizer, resolve_name, save_hf
from .options import (
    EncoderOptions,
    configure_encoder,
    encoder_options,
    get_shim,
    is_encoder,
    settle,
)
from .shim import HFShim

__all__ = [
    "EncoderOptions",
    "HFShim",
    "ModelLoadError",
    "check_window",
    "configure_encoder",
    "encode",
    "encoder_options",
    "get_shim",
    "is_encoder",
    "iter_batches",
    "load_hf",
    "load_tokenizer",
    "resolve_name",
    "save_hf",
    "settle",
]
