"""The ``trf`` component and what it writes onto Docs, and the components over fine-tuned HF
heads (``hf_token_classifier``, ``hf_text_classifier``): gradient bookkeeping for its listeners,
annotation setters, vector hooks, the frozen-feature cache and the nan/inf guard of training
steps."""

from .annotations import AnnotationSetter, configure_doc_tensor, token_tensor
from .component import Transformer, make_transformer
from .guards import NonFiniteLossError
from .hf_text_classifier import HFTextClassifierPipe, make_hf_text_classifier
from .hf_token_classifier import HFTokenClassifierPipe, make_hf_token_classifier
from .vectors import install_vector_hooks

__all__ = [
    "AnnotationSetter",
    "HFTextClassifierPipe",
    "HFTokenClassifierPipe",
    "NonFiniteLossError",
    "Transformer",
    "configure_doc_tensor",
    "install_vector_hooks",
    "make_hf_text_classifier",
    "make_hf_token_classifier",
    "make_transformer",
    "token_tensor",
]
