"""Heads on the encoder's rows that spaCy's own components do not provide."""

from .textcat import TransformerTextCat

__all__ = ["TransformerTextCat"]
