"""``hf_token_classifier``: a fine-tuned Hugging Face token classifier (NER, POS, morphology) as
a spaCy component, on spaCy's tokens.

Every token takes the label its pieces give it (``aggregation``, as transformers' pipeline
does for words). Entities and spans are therefore always whole spaCy tokens: where the model's
entity boundary falls inside a spaCy token, the token's ``aggregation`` decides, and the entity
covers the whole token. Tokens without pieces (whitespace) take no label and are skipped when
label sequences are read as entities.
"""

from collections.abc import Iterable
from typing import Any

import numpy as np
from spacy.language import Language
from spacy.parts_of_speech import IDS as UPOS_IDS
from spacy.pipeline.ner import ner_score
from spacy.scorer import Scorer
from spacy.tokens import Doc, MorphAnalysis, Span, SpanGroup
from spacy.training import Example, offsets_to_biluo_tags
from spacy.vocab import Vocab
from thinc.api import Model
from thinc.types import Floats2d

from ..heads import HFTokenClassifier, LabelScheme
from ..pieces import configure_doc_spans
from .hf_pipe import HF_PIPE_DEFAULTS, HFPipe
from .saving import save_atomically

ANNOTATIONS = ("ents", "spans", "tag", "pos", "morph")
EPSILON = 1e-8  # probabilities are clipped here in the loss


@Language.factory(
    "hf_token_classifier",
    assigns=["doc.ents", "doc.spans", "token.tag", "token.pos", "token.morph"],
    default_config={
        "model": None,
        "annotate": "ents",
        "aggregation": "first",
        "spans_key": None,
        **HF_PIPE_DEFAULTS,
    },
    default_score_weights={
        "ents_f": 1.0,
        "ents_p": 0.0,
        "ents_r": 0.0,
        "ents_per_type": None,
        "tag_acc": 1.0,
        "pos_acc": 1.0,
        "morph_acc": 1.0,
        "morph_per_feat": None,
    },  # fmt: skip
)
def make_hf_token_classifier(
    nlp: Language,
    name: str,
    model: str | None,
    annotate: str,
    aggregation: str,
    spans_key: str | None,
    window: int,
    stride: int,
    max_batch_pieces: int,
    inference: str,
    learn_rate_scale: float,
) -> "HFTokenClassifierPipe":
    """Create an hf_token_classifier.

    model (str): Hub id or local directory of an AutoModelForTokenClassification.
    annotate (str): What its labels are: "ents" (doc.ents), "spans" (doc.spans[spans_key]),
        "tag", "pos" (UPOS) or "morph" (UD features) of each token. Entity labels must be an
        IOB2, BILOU or IOBES scheme.
    aggregation (str): A token's label from its pieces: "first", "average" or "max".
    spans_key (str | None): doc.spans key of the entities or spans with their scores
        (``doc.spans[key].attrs["scores"]``); default: the component's name.
    window, stride (int): Content pieces per window and between window starts.
    max_batch_pieces (int): Most padded pieces per forward call.
    inference (str): The prediction backend: "torch", "bf16", "int8", "compile" or "auto".
    learn_rate_scale (float): Multiplies the learning rate of the model's weights in training.
    """
    if not isinstance(model, str) or not model:
        raise ValueError(
            f"hf_token_classifier needs 'model': a hub id or the directory of an "
            f"AutoModelForTokenClassification, e.g. config={{'model': 'dslim/bert-base-NER'}}; "
            f"got {model!r}."
        )
    if annotate not in ANNOTATIONS:
        raise ValueError(f"annotate must be one of {ANNOTATIONS}, got {annotate!r}.")
    thinc_model = HFTokenClassifier(
        model, configure_doc_spans(), aggregation, window, stride, {}, {}
    )
    save_atomically(nlp)
    return HFTokenClassifierPipe(
        nlp.vocab, thinc_model, name, model, annotate=annotate, aggregation=aggregation,
        spans_key=spans_key or name,
        max_batch_pieces=max_batch_pieces, inference=inference, learn_rate_scale=learn_rate_scale,
    )  # fmt: skip


class HFTokenClassifierPipe(HFPipe):
    """Sets entities, spans, tags, POS or morphology from a token classification head."""

    def __init__(
        self, vocab: Vocab, model: Model, name: str, source: str, *, annotate: str,
        aggregation: str, spans_key: str, **options: Any,
    ) -> None:  # fmt: skip
        super().__init__(vocab, model, name, source, **options)
        self.annotate = annotate
        self.spans_key = spans_key
        self.cfg.update({"annotate": annotate, "aggregation": aggregation, "spans_key": spans_key})
        self._scheme: LabelScheme | None = None

    @property
    def scheme(self) -> LabelScheme:
        """The labels read as an entity scheme (annotate "ents" or "spans")."""
        if self._scheme is None:
            self._scheme = LabelScheme.from_labels(self.labels, self.cfg["model"])
        return self._scheme

    def _check_model(self) -> None:
        super()._check_model()
        self._scheme = None
        if self.annotate in ("ents", "spans"):
            _ = self.scheme
        elif self.annotate == "pos":
            bad = [label for label in self.labels if label not in UPOS_IDS]
            if bad:
                raise ValueError(
                    f"annotate = 'pos' needs Universal POS labels, but the model has {bad[:5]}. "
                    "Use annotate = 'tag' for other tag sets."
                )

    # Prediction -----------------------------------------------------------------------------

    def set_annotations(self, docs: Iterable[Doc], scores: list[Floats2d]) -> None:
        labels = self.labels
        feats_of = [_feats(label) for label in labels] if self.annotate == "morph" else []
        for doc, scored in zip(docs, scores, strict=True):
            probs = np.asarray(self.model.ops.to_numpy(scored))
            seen = probs.sum(axis=1) > 0
            ids = np.where(seen, probs.argmax(axis=1), -1) if len(probs) else np.zeros(0, "i")
            if self.annotate in ("ents", "spans"):
                self._set_spans(doc, ids, probs)
                continue
            for token, i in zip(doc, ids.tolist(), strict=True):
                if i < 0:
                    continue
                if self.annotate == "tag":
                    token.tag_ = labels[i]
                elif self.annotate == "pos":
                    token.pos_ = labels[i]
                else:  # UD features; a POS feature (spaCy's morphologizer labels) sets pos
                    feats = dict(feats_of[i])
                    pos = feats.pop("POS", None)
                    token.morph = MorphAnalysis(doc.vocab, feats)
                    if pos is not None and pos in UPOS_IDS:
                        token.pos_ = pos

    def _set_spans(self, doc: Doc, ids: np.ndarray, probs: np.ndarray) -> None:
        starts, ends, types = self.scheme.decode(ids)
        confidence = probs.max(axis=1) if len(probs) else np.zeros(0, "f")
        names = self.scheme.types
        spans = [
            Span(doc, s, e, label=names[t])
            for s, e, t in zip(starts.tolist(), ends.tolist(), types.tolist(), strict=True)
        ]
        scores = np.array(
            [confidence[s:e][ids[s:e] >= 0].mean() for s, e in zip(starts, ends, strict=True)],
            dtype="f",
        )
        doc.spans[self.spans_key] = SpanGroup(
            doc, name=self.spans_key, spans=spans, attrs={"scores": scores}
        )
        if self.annotate == "ents":
            doc.set_ents(spans, default="outside")

    # Training -------------------------------------------------------------------------------

    def get_loss(self, examples: Iterable[Example], scores: list[Floats2d]) -> tuple[float, Any]:
        """Cross-entropy of each token's gold label; tokens without a gold label or pieces do
        not count."""
        loss, grads = 0.0, []
        index = {label: i for i, label in enumerate(self._label_keys())}
        for eg, probs in zip(examples, scores, strict=True):
            gold = self._gold_ids(eg, index)
            xp = self.model.ops.xp
            d = self.model.ops.alloc2f(*probs.shape)
            seen = self.model.ops.to_numpy(probs).sum(axis=1) > 0
            rows = xp.asarray(np.flatnonzero((gold >= 0) & seen))
            if len(rows):
                cols = xp.asarray(gold)[rows]
                p = xp.maximum(probs[rows, cols], EPSILON)
                loss += float(-xp.log(p).sum())
                d[rows, cols] = -1.0 / p
            grads.append(d)
        return loss, grads

    def _gold_ids(self, eg: Example, index: dict[str, int]) -> np.ndarray:
        """One gold label id per predicted token (``index``: label key -> id); -1 where missing
        or unknown to the model."""
        if self.annotate in ("ents", "spans"):
            return self.scheme.encode(self._gold_biluo(eg))
        return np.array([index.get(v, -1) if v else -1 for v in self._gold_labels(eg)], dtype="i")

    def _label_keys(self) -> list[str]:
        """The labels as gold labels are spelled: morph labels with their features sorted."""
        if self.annotate != "morph":
            return list(self.labels)
        return [_morph_key(_feats(label)) for label in self.labels]

    def _gold_labels(self, eg: Example) -> list[str | None]:
        """Per predicted token its gold tag, POS or morph label (with a POS feature when the
        model's labels have one, as spaCy's morphologizer's do); None where missing."""
        if self.annotate != "morph":
            attr = {"tag": "TAG", "pos": "POS"}[self.annotate]
            return list(eg.get_aligned(attr, as_string=True))
        with_pos = any("POS=" in label for label in self.labels)
        morphs = eg.get_aligned("MORPH", as_string=True)
        pos = eg.get_aligned("POS", as_string=True) if with_pos else [None] * len(morphs)
        labels: list[str | None] = []
        for m, p in zip(morphs, pos, strict=True):
            if m is None or (with_pos and not p):
                labels.append(None)
                continue
            feats = _feats(m)
            if with_pos:
                feats["POS"] = str(p)
            labels.append(_morph_key(feats))
        return labels

    def _gold_biluo(self, eg: Example) -> list[str | None]:
        if self.annotate == "ents":
            return list(eg.get_aligned_ner())
        if self.spans_key not in eg.reference.spans:  # not annotated: no target
            return [None] * len(eg.predicted)
        spans = eg.get_aligned_spans_y2x(eg.reference.spans[self.spans_key], allow_overlap=True)
        try:
            return list(
                offsets_to_biluo_tags(
                    eg.predicted, [(s.start_char, s.end_char, s.label_) for s in spans]
                )
            )
        except ValueError as err:
            raise ValueError(
                f"The gold spans in doc.spans['{self.spans_key}'] overlap, which a token "
                f"classifier cannot learn: keep one of each overlapping pair. ({err})"
            ) from err

    def _check_examples(self, examples: list[Example]) -> None:
        if self.annotate in ("ents", "spans"):
            for eg in examples:
                self.scheme.encode(self._gold_biluo(eg))  # raises naming an unknown type
            return
        gold = {v for eg in examples for v in self._gold_labels(eg) if v}
        self._refuse_unknown(f"{self.annotate}", gold, set(self._label_keys()))

    # Scoring --------------------------------------------------------------------------------

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        examples = list(examples)
        if self.annotate == "ents":
            return ner_score(examples)
        if self.annotate == "spans":
            key = self.spans_key
            return Scorer.score_spans(
                examples, f"spans_{key}", getter=lambda doc, _: doc.spans.get(key, []),
                has_annotation=lambda doc: key in doc.spans, allow_overlap=True,
            )  # fmt: skip
        if self.annotate == "morph":
            scores = Scorer.score_token_attr(examples, "morph", getter=lambda t, _: str(t.morph))
            scores.update(Scorer.score_token_attr_per_feat(examples, "morph"))
            return scores
        return Scorer.score_token_attr(examples, self.annotate)


def _feats(label: str) -> dict[str, str]:
    """A morph label ("Number=Sing|POS=NOUN", "_" for none) as a feature dict."""
    if label in ("", "_"):
        return {}
    return dict(f.split("=", 1) for f in label.split("|") if "=" in f)


def _morph_key(feats: dict[str, str]) -> str:
    """One spelling of a feature dict, whatever the order its source wrote it in."""
    return "|".join(f"{k}={v}" for k, v in sorted(feats.items())) or "_"
