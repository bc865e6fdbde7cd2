"""``.vector`` / ``.similarity`` hooks on ``doc.tensor``: a token's, span's or doc's vector is the
weighted mean of the piece rows it received (for a single window that is exactly mean pooling
over the sequence)."""

from typing import Any

import numpy as np
from spacy.tokens import Doc, Span, Token
from thinc.util import to_numpy

WEIGHT_KEY = "spacy_trf.tensor_weight"


def install_vector_hooks(doc: Doc) -> None:
    """Make .vector / .similarity / .has_vector of the doc, its spans and tokens use doc.tensor."""
    for hooks in (doc.user_hooks, doc.user_span_hooks, doc.user_token_hooks):
        hooks["vector"] = _vector
        hooks["has_vector"] = _has_vector
        hooks["similarity"] = _similarity
    doc.user_hooks["vector_norm"] = _vector_norm
    doc.user_span_hooks["vector_norm"] = _vector_norm
    doc.user_token_hooks["vector_norm"] = _vector_norm


def _rows(obj: Doc | Span | Token) -> tuple[np.ndarray, np.ndarray]:
    doc = obj if isinstance(obj, Doc) else obj.doc
    tensor = to_numpy(doc.tensor)
    weight = doc.user_data.get(WEIGHT_KEY)
    if weight is None:
        weight = np.ones(len(tensor), dtype=np.float32)
    if isinstance(obj, Token):
        return tensor[obj.i : obj.i + 1], weight[obj.i : obj.i + 1]
    if isinstance(obj, Span):
        return tensor[obj.start : obj.end], weight[obj.start : obj.end]
    return tensor, weight


def _vector(obj: Any) -> np.ndarray:
    tensor, weight = _rows(obj)
    total = float(weight.sum())
    if total <= 0 or len(tensor) == 0:
        return np.zeros((tensor.shape[1] if tensor.ndim == 2 else 0,), dtype=np.float32)
    return (tensor.sum(0) / total).astype(np.float32)


def _has_vector(obj: Any) -> bool:
    return bool(_rows(obj)[1].sum() > 0)


def _vector_norm(obj: Any) -> float:
    return float(np.linalg.norm(_vector(obj)))


def _similarity(obj: Any, other: Any) -> float:
    a, b = obj.vector, other.vector
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else 0.0
