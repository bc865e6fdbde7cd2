"""The teacher's side of a distillation step: annotate the student's examples with the teacher's
predictions, and let the student's token classifiers learn from its scores inside spaCy's own
``nlp.update`` and training loop.

Raw text becomes examples whose reference doc is the teacher's annotated doc (silver labels for
the components that learn from annotations); gold examples keep their reference. Either way the
token classifiers' teacher scores ride along in ``reference.user_data``.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.training import Example

from .tokens import distill_update, teacher_scores, token_classifiers

SCORES = "spacy_trf.teacher_scores:"  # + component name: user_data key of (n_tokens, n_labels)
LABELS = "spacy_trf.teacher_labels:"  # + component name: the teacher's labels, in its order
GOLD = "spacy_trf.gold"  # user_data key: whether the reference holds gold annotations


def annotate(teacher: Language, examples: Sequence[Example], gold: bool) -> list[Example]:
    """``examples`` with the teacher's scores and labels (and, unless ``gold``, its annotated doc
    as the reference); raises if the teacher tokenizes a text differently from the student."""
    names = token_classifiers(teacher)
    docs = list(teacher.pipe(eg.predicted.text for eg in examples))
    scores = {name: teacher_scores(_trainable(teacher, name), docs) for name in names}
    labels = {name: tuple(_trainable(teacher, name).labels) for name in names}
    out = []
    for i, (eg, doc) in enumerate(zip(examples, docs, strict=True)):
        if [t.text for t in doc] != [t.text for t in eg.predicted]:
            raise ValueError(
                f"The teacher and the student tokenize {eg.predicted.text[:60]!r} differently: "
                "they must share the tokenizer (use the teacher's language and tokenizer "
                "settings in the student's [nlp] block)."
            )
        if doc.has_extension("trf"):
            doc._.trf = None  # the encoder's outputs are not needed past the scores
        reference = eg.reference if gold else doc
        reference.user_data[GOLD] = gold
        for name in names:
            reference.user_data[SCORES + name] = scores[name][i]
            reference.user_data[LABELS + name] = labels[name]
        out.append(Example(eg.predicted, reference))
    return out


@contextmanager
def distilling(student: Language, temperature: float, alpha: float) -> Iterator[None]:
    """Inside the block, the student's token classifiers update towards the teacher's scores on
    examples that carry them (``annotate``): the soft-target loss, mixed with the gold loss by
    ``alpha`` on the gold ones. Other components and examples update as usual."""
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(
            f"temperature must be > 0 and alpha in [0, 1]; got {temperature}, {alpha}."
        )
    patched = []
    for name in token_classifiers(student):
        proc = _trainable(student, name)
        patched.append((proc, vars(proc).get("update")))
        proc.update = _soft_update(proc, proc.update, temperature, alpha)
    try:
        yield
    finally:
        for proc, before in patched:
            if before is None:
                del proc.update  # back to the class's method
            else:
                proc.update = before


def _soft_update(proc: TrainablePipe, update: Any, temperature: float, alpha: float) -> Any:
    def soft_update(
        examples: Sequence[Example],
        *,
        drop: float = 0.0,
        sgd: Any = None,
        losses: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> dict[str, float]:
        targets = [eg.reference.user_data.get(SCORES + proc.name) for eg in examples]
        if any(t is None for t in targets):
            return update(examples, drop=drop, sgd=sgd, losses=losses, **kwargs)
        labels = examples[0].reference.user_data.get(LABELS + proc.name)
        if labels is not None and tuple(labels) != tuple(proc.labels):
            raise ValueError(
                f"'{proc.name}': the student's labels are not the teacher's, in its order: "
                "initialize the student from its student_config (the teacher's labels)."
            )
        losses = {} if losses is None else losses
        gold = [eg if eg.reference.user_data.get(GOLD) else None for eg in examples]
        loss = distill_update(
            proc,
            [eg.predicted for eg in examples],
            [np.asarray(t) for t in targets],
            temperature=temperature,
            alpha=alpha,
            gold=gold,
            drop=drop,
        )
        if sgd not in (None, False):
            proc.finish_update(sgd)
        losses[proc.name] = losses.get(proc.name, 0.0) + loss
        return losses

    return soft_update


def _trainable(nlp: Language, name: str) -> TrainablePipe:
    pipe = nlp.get_pipe(name)
    assert isinstance(pipe, TrainablePipe)
    return pipe
