"""Distilling token classifiers (tagger, morphologizer, senter): the student's per-token class
distributions learn the teacher's at a temperature, mixed with the gold loss where there is gold.
"""

from collections.abc import Sequence

import numpy as np
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import set_dropout_rate

from .losses import soft_target_loss

TOKEN_CLASSIFIERS = ("tagger", "morphologizer", "senter")


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
            s = np.asarray(teacher.model.ops.to_numpy(scores), dtype=np.float32)
            if not normalized and len(s):
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
            out.append(s)
    return out


def distill_update(
    student: TrainablePipe,
    docs: Sequence[Doc],
    targets: Sequence[np.ndarray],
    *,
    temperature: float = 1.0,
    alpha: float = 0.0,
    gold: Sequence[Example] | None = None,
    drop: float = 0.0,
) -> float:
    """One backward pass of ``student`` on ``docs`` towards the teacher's ``targets``; with
    ``gold`` (examples of the same docs) the loss is ``alpha`` times the gold loss plus
    ``1 - alpha`` times the soft-target loss. Returns the loss; the caller steps the optimizer.
    """
    check_labels(student, targets)
    if not any(len(doc) for doc in docs):
        return 0.0
    set_dropout_rate(student.model, drop)
    scores, backprop = student.model.begin_update(list(docs))
    lengths = [len(s) for s in scores]
    xp = student.model.ops.xp
    flat = np.concatenate([student.model.ops.to_numpy(s) for s in scores])
    soft_loss, d_soft = soft_target_loss(flat, np.concatenate(list(targets)), temperature)
    loss, d_flat = (1 - alpha) * soft_loss, (1 - alpha) * d_soft
    if gold is not None and alpha > 0:
        gold_loss, d_gold = student.get_loss(list(gold), scores)
        loss += alpha * gold_loss
        d_flat = d_flat + alpha * np.concatenate([student.model.ops.to_numpy(d) for d in d_gold])
    splits = np.cumsum(lengths)[:-1]
    backprop([xp.asarray(d, dtype="float32") for d in np.split(d_flat, splits)])
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
