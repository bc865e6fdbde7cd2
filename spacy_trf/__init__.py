"""spacy-trf: Hugging Face transformer encoders inside spaCy pipelines.

Doc -> pieces -> windows -> encoder (HF model) -> stitch -> pooling -> heads, with the
architectures in ``models`` and the ``trf`` component in ``pipeline`` (docs/architecture.md).
"""

from . import heads, models, pieces, pipeline, registry  # noqa: F401  (registers functions)
from .encoder import ModelLoadError, load_hf, save_hf
from .models import TransformerModel
from .pipeline import NonFiniteLossError, Transformer, make_transformer
from .stitch import DocTransformerGradient, DocTransformerOutput

__version__ = "0.1.0"
__all__ = [
    "DocTransformerGradient",
    "DocTransformerOutput",
    "ModelLoadError",
    "NonFiniteLossError",
    "Transformer",
    "TransformerModel",
    "load_hf",
    "make_transformer",
    "registry",
    "save_hf",
]
