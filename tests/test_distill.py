"""Distillation (spacy_trf/distill): the soft-target loss and its gradient, and a CNN student
tagger learning a trf teacher's tags from unlabelled text."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
import torch
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_trf.distill import distill_update, soft_target_loss, soften, teacher_scores
from spacy_trf.distill.student import student_config
from spacy_trf.distill.teach import annotate, distilling

from .conftest import make_nlp
from .test_training import DATA, TEXTS
from .test_training import tagger as tagger_config

# As if spacy-trf were not installed: not importable, and its entry points gone.
NO_SPACY_TRF = (
    "import sys, importlib.metadata as md; sys.modules['spacy_trf'] = None; "
    "keep = lambda eps: md.EntryPoints(e for e in eps if not e.value.startswith('spacy_trf')); "
    "every = md.entry_points(); "
    "every = type(every)({g: keep(e) for g, e in every.items()}) "
    "if hasattr(every, 'items') else keep(every); "
    "md.entry_points = lambda **kw: keep(every.select(**kw)) if kw else every; "
    "import spacy; "
)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_target_loss_is_t2_kl_with_the_gradient_of_the_student_logits(
    temperature: float,
) -> None:
    rng = np.random.default_rng(0)
    z, t = rng.normal(size=(7, 5)) * 3, rng.normal(size=(7, 5)) * 3
    loss, grad = soft_target_loss(softmax(z), softmax(t), temperature)
    logits = torch.tensor(z, requires_grad=True)
    p = torch.softmax(torch.tensor(t) / temperature, -1)
    kl = (p * (p.log() - torch.log_softmax(logits / temperature, -1))).sum() * temperature**2
    kl.backward()
    assert loss == pytest.approx(kl.item(), rel=1e-6)
    np.testing.assert_allclose(grad, logits.grad.numpy(), rtol=1e-4, atol=1e-6)
    # softer with T: the targets' entropy grows
    assert (soften(softmax(t), temperature).max(-1) <= softmax(t).max(-1) + 1e-9).all()
    assert soft_target_loss(softmax(t), softmax(t), temperature)[0] == pytest.approx(0, abs=1e-9)


def test_soft_target_loss_names_a_label_mismatch_and_a_bad_temperature() -> None:
    with pytest.raises(ValueError, match="same labels in the same order"):
        soft_target_loss(np.ones((2, 3)) / 3, np.ones((2, 4)) / 4, 1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        soft_target_loss(np.ones((2, 3)) / 3, np.ones((2, 3)) / 3, 0.0)


@pytest.fixture(scope="module")
def teacher(model_dirs: dict[str, str]) -> spacy.Language:
    return teacher_tagger(model_dirs["roberta"])


def teacher_tagger(model_dir: str) -> spacy.Language:
    """A tiny trf + a tagger listening to it, trained until it tags DATA's sentences right."""
    fix_random_seed(0)
    nlp = make_nlp(model_dir)
    nlp.add_pipe("tagger", config=tagger_config())
    egs = [Example.from_dict(nlp.make_doc(text), {"tags": ann["tags"]}) for text, ann in DATA]
    optimizer = nlp.initialize(lambda: egs)
    optimizer.learn_rate = 0.01
    for _ in range(60):
        nlp.update(egs, sgd=optimizer, drop=0.0)
    return nlp


def cnn_student(labels: tuple[str, ...]) -> spacy.Language:
    """spaCy's own CNN tagger (HashEmbedCNN tok2vec inside), initialized with the teacher's
    labels in the teacher's order and no annotated data."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("tagger")
    nlp.config["initialize"]["components"]["tagger"] = {"labels": list(labels)}
    nlp.initialize(lambda: [Example(nlp.make_doc(t), nlp.make_doc(t)) for t in TEXTS])
    assert nlp.get_pipe("tagger").labels == labels
    return nlp


def test_a_cnn_student_learns_the_teachers_tags_from_unlabelled_text(
    teacher: spacy.Language,
) -> None:
    taught = [[t.tag_ for t in doc] for doc in teacher.pipe(TEXTS)]
    assert taught == [ann["tags"] for _, ann in DATA]
    student = cnn_student(teacher.get_pipe("tagger").labels)
    tagger = student.get_pipe("tagger")
    docs = list(teacher.pipe(TEXTS, disable=["tagger"]))  # unlabelled: only the teacher's scores
    targets = teacher_scores(teacher.get_pipe("tagger"), docs)
    np.testing.assert_allclose([t.sum(1) for t in targets][0], 1.0, rtol=1e-5)  # distributions
    optimizer = Adam(0.01)
    losses = []
    for _ in range(60):
        student_docs = list(student.pipe(TEXTS, disable=["tagger"]))
        losses.append(distill_update(tagger, student_docs, targets, temperature=2.0))
        tagger.finish_update(optimizer)
    assert losses[-1] < 0.1 * losses[0]
    learned = [[t.tag_ for t in doc] for doc in student.pipe(TEXTS)]
    pairs = zip(sum(learned, []), sum(taught, []), strict=True)
    agree = np.mean([a == b for a, b in pairs])
    assert agree >= 0.9


def test_gold_mixes_in_and_a_label_mismatch_is_named() -> None:
    student = cnn_student(("NOUN", "VERB"))
    tagger = student.get_pipe("tagger")
    docs = list(student.pipe(TEXTS[:1], disable=["tagger"]))
    with pytest.raises(
        ValueError, match="'tagger': the teacher scores 3 labels, the student has 2"
    ):
        distill_update(tagger, docs, [np.full((len(docs[0]), 3), 1 / 3, dtype="f")])
    uniform = [np.full((len(docs[0]), 2), 0.5, dtype="f")]
    gold = [Example.from_dict(docs[0], {"tags": ["NOUN"] * len(docs[0])})]
    # alpha weighs the component's own gold loss against the soft-target loss
    scores, _ = tagger.model.begin_update(docs)  # no step is taken: the weights stay
    gold_loss, _ = tagger.get_loss(gold, scores)
    soft_loss = distill_update(tagger, docs, uniform)
    assert distill_update(tagger, docs, uniform, alpha=1.0, gold=gold) == pytest.approx(gold_loss)
    mixed = distill_update(tagger, docs, uniform, alpha=0.25, gold=gold)
    assert mixed == pytest.approx(0.25 * gold_loss + 0.75 * soft_loss, rel=1e-5)
    # a batch of a gold doc and a raw one: alpha acts on the gold doc only
    two = list(student.pipe(TEXTS[:2], disable=["tagger"]))
    targets = [np.full((len(d), 2), 0.5, dtype="f") for d in two]
    raw_soft = distill_update(tagger, two[1:], targets[1:])
    both = distill_update(tagger, two, targets, alpha=1.0, gold=[gold[0], None])
    assert both == pytest.approx(gold_loss + raw_soft, rel=1e-5)


def test_the_student_config_is_spacys_cnn_pipeline_with_the_teachers_labels(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    from spacy.util import load_model_from_config
    from thinc.api import Config

    teacher = teacher_tagger(model_dirs["roberta"])
    teacher.add_pipe("ner")
    teacher.get_pipe("ner").add_label("ORG")
    teacher.get_pipe("ner").add_label("GPE")
    morph = teacher.add_pipe("morphologizer")
    morph.add_label("Number=Sing|POS=NOUN")
    teacher.add_pipe("senter")
    config = Config().from_str(student_config(teacher, tmp_path).to_str())  # as a file holds it
    assert list(config["components"]) == ["tok2vec", "tagger", "ner", "morphologizer", "senter"]
    tok2vec = config["components"]["tok2vec"]["model"]
    assert tok2vec["@architectures"] == "spacy.Tok2Vec.v2"
    assert tok2vec["embed"]["@architectures"] == "spacy.MultiHashEmbed.v2"
    student = load_model_from_config(config, auto_fill=True, validate=True)
    student.initialize(lambda: [Example(student.make_doc(t), student.make_doc(t)) for t in TEXTS])
    assert student.get_pipe("tagger").labels == teacher.get_pipe("tagger").labels
    assert student.get_pipe("ner").labels == teacher.get_pipe("ner").labels
    assert student.get_pipe("morphologizer").labels == teacher.get_pipe("morphologizer").labels
    assert "trf" not in student.pipe_names


def test_a_teacher_without_distillable_components_is_refused(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no component to distil"):
        student_config(make_nlp(model_dirs["roberta"]), tmp_path)
    teacher = make_nlp(model_dirs["roberta"])
    teacher.add_pipe("tagger", name="pos")
    with pytest.raises(ValueError, match="'pos' \\(factory 'tagger'\\) cannot be distilled"):
        student_config(teacher, tmp_path)


def test_distilling_inside_spacys_update_and_the_student_loads_without_spacy_trf(
    teacher: spacy.Language, tmp_path: Path
) -> None:
    from spacy.util import load_model_from_config

    fix_random_seed(0)
    config = student_config(teacher, tmp_path / "labels")
    student = load_model_from_config(config, auto_fill=True, validate=True)
    raw = [Example(student.make_doc(t), student.make_doc(t)) for t in TEXTS]
    student.initialize(lambda: raw)
    examples = annotate(teacher, raw, gold=False)
    assert [t.tag_ for t in examples[0].reference] == DATA[0][1]["tags"]  # silver = the teacher's
    optimizer = student.resume_training()
    optimizer.learn_rate = 0.01
    with distilling(student, temperature=2.0, alpha=0.5):
        losses = [student.update(examples, sgd=optimizer)["tagger"] for _ in range(50)]
    with pytest.raises(ValueError, match="alpha in \\[0, 1\\]"), distilling(student, 1.0, 2.0):
        pass
    assert "update" not in vars(student.get_pipe("tagger"))  # the class's own update again
    assert losses[-1] < 0.2 * losses[0]
    taught = [t.tag_ for doc in teacher.pipe(TEXTS) for t in doc]
    learned = [t.tag_ for doc in student.pipe(TEXTS) for t in doc]
    assert np.mean([a == b for a, b in zip(learned, taught, strict=True)]) >= 0.9
    student.to_disk(tmp_path / "student")
    script = NO_SPACY_TRF + (
        f"nlp = spacy.load({str(tmp_path / 'student')!r}); "
        f"print([t.tag_ for t in nlp({TEXTS[0]!r})])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([t.tag_ for t in student(TEXTS[0])])


def test_teacher_and_student_must_tokenize_alike(teacher: spacy.Language) -> None:
    student = spacy.blank("en")
    student.tokenizer.add_special_case("Apple", [{"ORTH": "App"}, {"ORTH": "le"}])
    raw = [Example(student.make_doc(t), student.make_doc(t)) for t in TEXTS]
    with pytest.raises(ValueError, match="tokenize 'Apple buys a startup in London .' differently"):
        annotate(teacher, raw, gold=False)
