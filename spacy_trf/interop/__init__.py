"""Interoperation: components trained in spaCy exported as Hugging Face classification models
(``export_hf``); spacy-transformers configs and pipelines migrated to spacy-trf (``migrate``)."""

from .export import ExportError, ExportReport, export_hf
from .migrate import MigrationError, MigrationReport, migrate, migrate_config

__all__ = [
    "ExportError",
    "ExportReport",
    "MigrationError",
    "MigrationReport",
    "export_hf",
    "migrate",
    "migrate_config",
]
