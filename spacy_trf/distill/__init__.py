"""Distillation: a transformer teacher pipeline into a fast student (issue 22, in progress).

``student.py`` writes the student's config (spaCy's CNN pipeline with the teacher's labels);
``losses.py`` has the soft-target loss; ``tokens.py`` one update of a token classifier towards a
teacher's distributions; ``teach.py`` annotates examples with the teacher and makes the student's
token classifiers learn its scores inside spaCy's own ``nlp.update``.
"""

from .losses import soft_target_loss, soften
from .student import student_config, teacher_components
from .teach import annotate, distilling
from .tokens import TOKEN_CLASSIFIERS, distill_update, teacher_scores

__all__ = [
    "TOKEN_CLASSIFIERS",
    "annotate",
    "distilling",
    "distill_update",
    "soft_target_loss",
    "soften",
    "student_config",
    "teacher_components",
    "teacher_scores",
]
