"""Heads on the encoder's rows that spaCy's own components do not provide, and fine-tuned Hugging
Face classification heads read onto spaCy tokens and docs."""

from .hf_text import HFTextClassifier, sigmoid_scores
from .hf_token import AGGREGATIONS, HFTokenClassifier
from .schemes import LabelScheme
from .textcat import TransformerTextCat

__all__ = [
    "AGGREGATIONS",
    "HFTextClassifier",
    "HFTokenClassifier",
    "LabelScheme",
    "TransformerTextCat",
    "sigmoid_scores",
]
