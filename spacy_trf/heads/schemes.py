"""Entity label schemes of token classifiers (IOB2/BIO, BILOU, IOBES): labels per token <->
entities as token ranges, vectorised with numpy."""

from dataclasses import dataclass

import numpy as np

# Prefixes as one letter each: E (end) reads as L, S (single) as U.
PREFIXES = {"B": "B", "I": "I", "L": "L", "U": "U", "E": "L", "S": "U"}
OUTSIDE = "O"
# spaCy's BILUO tags -> the tag a scheme uses for them.
FROM_BILUO = {
    "BIO": {"B": "B", "I": "I", "L": "I", "U": "B"},
    "BILOU": {"B": "B", "I": "I", "L": "L", "U": "U"},
    "IOBES": {"B": "B", "I": "I", "L": "E", "U": "S"},
}


@dataclass(frozen=True)
class LabelScheme:
    """A token classifier's labels (by id) read as an entity scheme.

    kind: "BIO" (IOB2), "BILOU" or "IOBES". types: the entity types, sorted.
    prefix: per label id, one of "O", "B", "I", "L", "U" (E and S mapped to L and U).
    type_of: per label id, the index of its type in ``types``, -1 for O.
    """

    labels: tuple[str, ...]
    kind: str
    types: tuple[str, ...]
    prefix: np.ndarray
    type_of: np.ndarray

    @classmethod
    def from_labels(cls, labels: tuple[str, ...], name: str) -> "LabelScheme":
        """Read ``labels`` as a scheme, or raise naming the labels that do not fit."""
        parsed = [_parse(label) for label in labels]
        bad = [label for label, p in zip(labels, parsed, strict=True) if p is None]
        if bad or OUTSIDE not in labels:
            problem = (
                f"labels {bad[:5]} are not" if bad else "there is no 'O' label, so they are not"
            )
            shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
            raise ValueError(
                f"The labels of '{name}' ({shown}) cannot be read as entities: {problem} "
                "B-/I- (IOB2), B-/I-/L-/U- (BILOU) or "
                "B-/I-/E-/S- (IOBES) tags. For labels that are tags of single tokens use "
                'annotate = "tag", "pos" or "morph".'
            )
        letters = {label[0] for label in labels if label != OUTSIDE}
        kind = "IOBES" if letters & {"E", "S"} else "BILOU" if letters & {"L", "U"} else "BIO"
        types = tuple(sorted({p[1] for p in parsed if p is not None and p[1]}))
        type_index = {t: i for i, t in enumerate(types)}
        prefix = np.array([p[0] if p else OUTSIDE for p in parsed])
        type_of = np.array([type_index[p[1]] if p and p[1] else -1 for p in parsed], dtype="i")
        return cls(tuple(labels), kind, types, prefix, type_of)

    def decode(self, label_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Entities from one label id per token (-1: a token the model did not see, skipped).

        A token starts an entity when it is inside one and has a B or U tag, or follows a token
        outside it, of another type, or with an L or U tag; an I tag after O therefore starts
        one, as transformers' pipeline reads it. Returns (starts, ends, type indices), ends
        exclusive.
        """
        label_ids = np.asarray(label_ids)
        seen = np.flatnonzero(label_ids >= 0)
        ids = label_ids[seen]
        types, prefix = self.type_of[ids], self.prefix[ids]
        inside = types >= 0
        prev_types = np.concatenate([[-1], types[:-1]])
        prev_prefix = np.concatenate([[OUTSIDE], prefix[:-1]])
        starts = inside & (
            np.isin(prefix, ["B", "U"]) | (prev_types != types) | np.isin(prev_prefix, ["L", "U"])
        )
        group = np.cumsum(starts)[inside]
        tokens = seen[inside]
        if not len(tokens):
            empty = np.zeros(0, dtype="i")
            return empty, empty, empty
        first = np.flatnonzero(np.diff(np.concatenate([[0], group])) != 0)
        last = np.concatenate([first[1:], [len(group)]]) - 1
        return tokens[first], tokens[last] + 1, types[inside][first]

    def encode(self, biluo: list[str | None]) -> np.ndarray:
        """Label ids from spaCy's BILUO tags (``Example.get_aligned_ner``); -1 where a tag is
        missing. Raises naming a type the model lacks."""
        index = {label: i for i, label in enumerate(self.labels)}
        convert = FROM_BILUO[self.kind]
        ids = np.full(len(biluo), -1, dtype="i")
        for i, tag in enumerate(biluo):
            if tag is None or tag == "-" or tag == "":
                continue
            label = OUTSIDE if tag == OUTSIDE else f"{convert[tag[0]]}-{tag[2:]}"
            if label not in index:
                raise ValueError(
                    f"The gold entity type '{tag[2:]}' is not among the model's types "
                    f"({', '.join(self.types)}): train only on types the model's id2label has."
                )
            ids[i] = index[label]
        return ids


def _parse(label: str) -> tuple[str, str] | None:
    """(prefix letter, type) of a scheme label, ("O", "") for O, None if it is neither."""
    if label == OUTSIDE:
        return OUTSIDE, ""
    if len(label) > 2 and label[1] == "-" and label[0] in PREFIXES:
        return PREFIXES[label[0]], label[2:]
    return None
