"""spacy-trf: Hugging Face transformer encoders inside spaCy pipelines."""

from . import hooks, listener, registry, spans, textcat  # noqa: F401  (registers functions)
from .hf import ModelLoadError, load_hf, save_hf
from .model import TransformerModel
from .output import DocTransformerGradient, DocTransformerOutput
from .pipe import Transformer, make_transformer

__version__ = "0.1.0"
__all__ = [
    "DocTransformerGradient",
    "DocTransformerOutput",
    "ModelLoadError",
    "Transformer",
    "TransformerModel",
    "load_hf",
    "make_transformer",
    "registry",
    "save_hf",
]
