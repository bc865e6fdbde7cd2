"""The ``trf`` component and what it writes onto Docs: gradient bookkeeping for its listeners,
annotation setters, vector hooks and the frozen-feature cache."""

from .annotations import AnnotationSetter, configure_doc_tensor, token_tensor
from .component import Transformer, make_transformer
from .vectors import install_vector_hooks

__all__ = [
    "AnnotationSetter",
    "Transformer",
    "configure_doc_tensor",
    "install_vector_hooks",
    "make_transformer",
    "token_tensor",
]
