"""Distillation losses: a student's class distributions against a teacher's, both softened by a
temperature T (Hinton et al. 2015, "Distilling the knowledge in a neural network").

Rows are whatever a component classifies: tokens for a tagger or morphologizer, docs for a text
classifier. The gradient is taken with respect to the student's logits, which is what spaCy's
softmax output layers pass back (their own loss gradients are ``probs - truth``).
"""

import numpy as np

EPS = 1e-12  # probabilities are clipped here before their logarithm


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Distributions at temperature T: softmax(log(p) / T), row by row (T = 1: unchanged)."""
    if temperature == 1.0:
        return probs / probs.sum(axis=-1, keepdims=True)
    z = np.log(np.clip(probs, EPS, None)) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def soft_target_loss(
    student: np.ndarray,
    teacher: np.ndarray,
    temperature: float,
    weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """T² · KL(teacher_T ‖ student_T) summed over rows (weighted by ``weights`` if given), and
    the gradient of the unweighted loss with respect to the student's logits, T · (student_T −
    teacher_T); ``student`` and ``teacher`` are (rows, classes) probabilities. T² keeps the
    gradients' scale independent of T."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"The student's scores have shape {student.shape} but the teacher's {teacher.shape}: "
            "the two components must have the same labels in the same order."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    q = soften(np.asarray(student, dtype=np.float64), temperature)
    p = soften(np.asarray(teacher, dtype=np.float64), temperature)
    kl = (p * (np.log(np.clip(p, EPS, None)) - np.log(np.clip(q, EPS, None)))).sum(axis=-1)
    total = kl.sum() if weights is None else (kl * weights).sum()
    grad = temperature * (q - p)
    return float(temperature**2 * total), grad.astype(np.float32)
