"""The student's config: spaCy's own CNN pipeline (``spacy.Tok2Vec.v2`` with ``MultiHashEmbed``,
shared by listeners, from ``spacy init config --optimize efficiency``) for the teacher's
trainable components, initialized with the teacher's labels in the teacher's order."""

from pathlib import Path
from typing import Any, cast

import srsly
from spacy.cli.init_config import init_config
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from thinc.api import Config

# The components a student can learn from a teacher (issue 22 covers these).
DISTILLABLE = (
    "tagger",
    "morphologizer",
    "senter",
    "parser",
    "ner",
    "textcat",
    "textcat_multilabel",
)


def teacher_components(teacher: Language) -> list[str]:
    """The teacher's trainable components other than its encoders, in pipeline order; raises
    naming any that a student cannot learn."""
    names = []
    for name, pipe in teacher.pipeline:
        factory = teacher.get_pipe_meta(name).factory
        if not isinstance(pipe, TrainablePipe) or factory in ("trf", "tok2vec", "transformer"):
            continue
        if factory not in DISTILLABLE or name != factory:
            raise ValueError(
                f"The teacher's component '{name}' (factory '{factory}') cannot be distilled: a "
                "student learns components named as their factory, one of "
                f"{', '.join(DISTILLABLE)} (rename it with nlp.rename_pipe)."
            )
        names.append(name)
    if not names:
        raise ValueError(
            "The teacher pipeline has no component to distil (tagger, parser, ner, ...)."
        )
    return names


def student_config(teacher: Language, labels_dir: Path) -> Config:
    """A complete training config for a CNN student of ``teacher`` (paths left to fill in); the
    teacher's labels are written to ``labels_dir`` as ``spacy init labels`` does, and read by
    ``spacy.read_labels.v1`` at initialization."""
    names = teacher_components(teacher)
    config = init_config(
        lang=teacher.lang or "xx", pipeline=names, optimize="efficiency", gpu=False, silent=True
    )
    init: dict[str, Any] = config["initialize"].setdefault("components", {})
    labels_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        label_data = cast(TrainablePipe, teacher.get_pipe(name)).label_data
        if label_data is None:  # senter: no labels to give
            continue
        path = labels_dir / f"{name}.json"
        srsly.write_json(path, _plain(label_data))
        init[name] = {"labels": {"@readers": "spacy.read_labels.v1", "path": str(path)}}
    return config


def _plain(value: Any) -> Any:
    """Label data as the config file can hold it: lists and string-keyed dicts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
