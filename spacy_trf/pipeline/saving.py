"""Pipelines with a spacy-trf component save atomically.

spaCy's ``Language.to_disk`` writes config.cfg, meta.json and the tokenizer before any component,
into the target directory: a component that fails (not initialized, a full disk while writing the
weights) left a half-written or mixed pipeline there. The factories of spacy-trf's components
give their ``nlp`` a ``to_disk`` that runs spaCy's own into a directory beside the target and
swaps the result in, so the target holds the old pipeline or the new one, never a mix.
"""

from pathlib import Path
from typing import Any

from spacy.language import Language

from ..files import replace_dir


class AtomicToDisk:
    """``nlp.to_disk`` through a directory beside the target (files.replace_dir)."""

    def __init__(self, nlp: Language) -> None:
        self.nlp = nlp

    def __call__(self, path: str | Path, *, exclude: Any = ()) -> None:
        nlp = self.nlp
        replace_dir(path, lambda p: type(nlp).to_disk(nlp, p, exclude=exclude), keep_others=True)


def save_atomically(nlp: Language) -> None:
    """Make ``nlp.to_disk`` atomic (once per pipeline)."""
    if not isinstance(vars(nlp).get("to_disk"), AtomicToDisk):
        setattr(nlp, "to_disk", AtomicToDisk(nlp))  # noqa: B010 (mypy: assigning a method)
