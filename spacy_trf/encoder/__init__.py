"""Windows -> HF model: loading and saving, the shim that owns the model, the one forward path,
CPU dropout and the inference backends."""

from . import fork  # noqa: F401 (forked children run torch on one thread)
from .configure import configure_encoder, encoder_options, get_shim, is_encoder
from .forward import check_window, encode, iter_batches
from .loading import ModelLoadError, load_hf, load_tokenizer, resolve_name, save_hf
from .options import COMPONENT_OPTIONS, EncoderOptions
from .shim import HFShim

__all__ = [
    "COMPONENT_OPTIONS",
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
]
