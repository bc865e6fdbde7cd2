"""Annotated Docs -> records: one dict per document with the annotations its pipeline sets."""

from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

# Record keys by what a component assigns (spaCy's factory metadata).
KEYS_BY_ASSIGN = {
    "token.tag": ("tags",),
    "token.pos": ("pos",),
    "token.morph": ("morphs",),
    "token.lemma": ("lemmas",),
    "token.dep": ("heads", "deps"),
    "token.head": ("heads", "deps"),
    "doc.ents": ("ents",),
    "doc.spans": ("spans",),
    "doc.cats": ("cats",),
}
KEY_ORDER = ("tags", "pos", "morphs", "lemmas", "heads", "deps", "ents", "spans", "cats")


def record_keys(nlp: Language) -> tuple[str, ...]:
    """The annotation keys that ``nlp``'s components set, in a fixed order."""
    keys: set[str] = set()
    for name in nlp.pipe_names:
        for assign in nlp.get_pipe_meta(name).assigns:
            keys.update(KEYS_BY_ASSIGN.get(assign, ()))
    return tuple(k for k in KEY_ORDER if k in keys)


def doc_record(doc_id: str, doc: Doc, meta: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """``id``, ``text``, ``meta``, ``tokens`` and the annotations named in ``keys``.

    ents and spans are ``[start_char, end_char, label]``; heads are token indices.
    """
    record: dict[str, Any] = {
        "id": doc_id,
        "text": doc.text,
        "meta": meta,
        "tokens": [t.text for t in doc],
    }
    for key in keys:
        record[key] = _VALUES[key](doc)
    return record


_VALUES = {
    "tags": lambda doc: [t.tag_ for t in doc],
    "pos": lambda doc: [t.pos_ for t in doc],
    "morphs": lambda doc: [str(t.morph) for t in doc],
    "lemmas": lambda doc: [t.lemma_ for t in doc],
    "heads": lambda doc: [t.head.i for t in doc],
    "deps": lambda doc: [t.dep_ for t in doc],
    "ents": lambda doc: [[e.start_char, e.end_char, e.label_] for e in doc.ents],
    "spans": lambda doc: {
        key: [[s.start_char, s.end_char, s.label_] for s in group]
        for key, group in doc.spans.items()
    },
    "cats": lambda doc: dict(doc.cats),
}
