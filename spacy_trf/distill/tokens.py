"""Distilling token classifiers (tagger, morphologizer, senter): the student's per-token class
distributions learn the teacher's at a temperature, mixed with the gold loss where there is gold.
"""

from collections.abc import Sequence
from typing import cast

import numpy as np
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import set_dropout_rate

from .losses import soft_target_loss

TOKEN_CLASSIFIERS = ("tagger", "morphologizer", "senter")


def token_classifiers(nlp: Language) -> list[str]:
    """The names of ``nlp``'s components that distil as token classifiers."""
    return [n for n in nlp.pipe_names if nlp.get_pipe_meta(n).factory in TOKEN_CLASSIFIERS]


def teacher_scores(
    teacher: TrainablePipe, docs: Sequence[Doc], batch_size: int = 64
) -> list[np.ndarray]:
    """The teacher component's per-token distributions over its labels, one array per doc (the
    docs must have been through the teacher's pipeline, so that its listeners find ``doc._.trf``).
    spaCy's taggers predict logits (``normalize = false``): they are softmaxed here."""
    normalized = all(node.attrs.get("softmax_normalize", True) for node in teacher.model.walk())
    out: list[np.ndarray] = []
    for start in range(0, len(docs), batch_size):
        batch = list(docs[start : start + batch_size])
        for scores in teacher.model.predict(batch):
            if not normalized and len(scores):
                scores = teacher.model.ops.softmax(scores)
            out.append(np.asarray(teacher.model.ops.to_numpy(scores), dtype=np.float32))
    return out


def distill_update(
    student: TrainablePipe,
    docs: Sequence[Doc],
    targets: Sequence[np.ndarray],
    *,
    temperature: float = 1.0,
    alpha: float = 0.0,
    gold: Sequence[Example | None] | None = None,
    drop: float = 0.0,
) -> float:
    """One backward pass of ``student`` on ``docs`` towards the teacher's ``targets``. Where
    ``gold`` holds an example for a doc (same order as ``docs``; ``None``: no gold for it), that
    doc's loss is ``alpha`` times the gold loss plus ``1 - alpha`` times the soft-target loss.
    Returns the loss; the caller steps the optimizer."""
    check_labels(student, targets)
    if not any(len(doc) for doc in docs):
        return 0.0
    set_dropout_rate(student.model, drop)
    scores, backprop = student.model.begin_update(list(docs))
    ops = student.model.ops
    lengths = [len(s) for s in scores]
    with_gold = [i for i, eg in enumerate(gold or []) if eg is not None] if alpha > 0 else []
    share = np.zeros(len(docs), dtype=np.float32)  # each doc's weight on its gold loss
    share[with_gold] = alpha
    rows_share = np.repeat(share, lengths)[:, None]
    flat = np.concatenate([ops.to_numpy(s) for s in scores])
    soft_loss, d_flat = soft_target_loss(
        flat, np.concatenate(list(targets)), temperature, weights=1 - rows_share[:, 0]
    )
    loss = soft_loss
    d_flat = d_flat * (1 - rows_share)
    if with_gold:
        assert gold is not None
        examples = [cast(Example, gold[i]) for i in with_gold]
        gold_loss, d_gold = student.get_loss(examples, [scores[i] for i in with_gold])
        loss += alpha * gold_loss
        starts = np.concatenate([[0], np.cumsum(lengths)])
        for i, d in zip(with_gold, d_gold, strict=True):
            d_flat[starts[i] : starts[i + 1]] += alpha * ops.to_numpy(d)
    splits = np.cumsum(lengths)[:-1]
    backprop([ops.xp.asarray(d, dtype="float32") for d in np.split(d_flat, splits)])
    return float(loss)


def check_labels(student: TrainablePipe, targets: Sequence[np.ndarray]) -> None:
    """Raise naming the component if the teacher's scores do not fit the student's labels."""
    width = len(student.labels)
    for target in targets:
        if target.ndim != 2 or target.shape[1] != width:
            raise ValueError(
                f"'{student.name}': the teacher scores {target.shape[-1]} labels, the student "
                f"has {width}. Initialize the student with the teacher's labels, in its order."
            )
