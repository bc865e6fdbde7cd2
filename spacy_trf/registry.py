"""Function registries of spacy-trf, shared with spaCy's config system.

Configs refer to entries with ``@span_getters``, ``@alignments`` and ``@annotation_setters``; users
add their own with ``@spacy_trf.registry.span_getters("my_spans")``.
"""

from typing import Any

from spacy.util import registry as spacy_registry


def _get_or_create(name: str) -> Any:
    # Reuse a registry of that name if another package created it first: spaCy's config resolver
    # knows a single registry per name, and entry names are namespaced ("spacy-trf.*").
    if not hasattr(spacy_registry, name):
        spacy_registry.create(name, entry_points=True)
    return getattr(spacy_registry, name)


span_getters = _get_or_create("span_getters")
alignments = _get_or_create("alignments")
annotation_setters = _get_or_create("annotation_setters")
architectures = spacy_registry.architectures
