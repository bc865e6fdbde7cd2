"""Interoperation with Hugging Face: components trained in spaCy exported as Hugging Face
classification models (``export_hf``)."""

from .export import ExportError, ExportReport, export_hf

__all__ = ["ExportError", "ExportReport", "export_hf"]
