"""``hf_text_classifier``: a fine-tuned Hugging Face sequence classifier (sentiment, topic, ...)
as a spaCy component that sets ``doc.cats``.

Single-label models (``problem_type`` other than "multi_label_classification") give a softmax,
multi-label ones independent sigmoids. A doc longer than one window gets the mean of its
windows' logits, then the softmax or sigmoid; an empty doc gets the scores of zero logits.
"""

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import Example
from thinc.types import Floats2d

from ..heads import HFTextClassifier, sigmoid_scores
from ..pieces import configure_doc_spans
from .hf_pipe import HF_PIPE_DEFAULTS, HFPipe
from .saving import save_atomically


@Language.factory(
    "hf_text_classifier",
    assigns=["doc.cats"],
    default_config={"model": None, "threshold": 0.5, **HF_PIPE_DEFAULTS},
    default_score_weights={
        "cats_score": 1.0,
        "cats_score_desc": None,
        "cats_micro_p": None,
        "cats_micro_r": None,
        "cats_micro_f": None,
        "cats_macro_p": None,
        "cats_macro_r": None,
        "cats_macro_f": None,
        "cats_macro_auc": None,
        "cats_f_per_type": None,
    },  # fmt: skip
)
def make_hf_text_classifier(
    nlp: Language,
    name: str,
    model: str | None,
    threshold: float,
    window: int,
    stride: int,
    max_batch_pieces: int,
    inference: str,
    learn_rate_scale: float,
) -> "HFTextClassifierPipe":
    """Create an hf_text_classifier.

    model (str): Hub id or local directory of an AutoModelForSequenceClassification.
    threshold (float): Score above which a label counts as assigned, for the scores of
        multi-label models.
    window, stride, max_batch_pieces, inference, learn_rate_scale: As for hf_token_classifier.
    """
    if not isinstance(model, str) or not model:
        raise ValueError(
            "hf_text_classifier needs 'model': a hub id or the directory of an "
            "AutoModelForSequenceClassification, e.g. config={'model': "
            f"'distilbert-base-uncased-finetuned-sst-2-english'}}; got {model!r}."
        )
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}.")
    thinc_model = HFTextClassifier(model, configure_doc_spans(), window, stride, {}, {})
    pipe = HFTextClassifierPipe(
        nlp.vocab, thinc_model, name, model, max_batch_pieces=max_batch_pieces,
        inference=inference, learn_rate_scale=learn_rate_scale,
    )  # fmt: skip
    pipe.cfg["threshold"] = float(threshold)
    save_atomically(nlp)
    return pipe


class HFTextClassifierPipe(HFPipe):
    """Sets ``doc.cats`` from a sequence classification head."""

    @property
    def multi_label(self) -> bool:
        """Whether the scores are independent sigmoids: a multi-label model, or one with a
        single label (False before the model is loaded)."""
        return self.shim.loaded and sigmoid_scores(self.shim.hf_model.config)

    def _check_model(self) -> None:
        super()._check_model()
        assert self.shim.pieces is not None
        if not self.shim.pieces.template.n_special:
            raise ValueError(
                f"The tokenizer of '{self.cfg['model']}' adds no special tokens, so there is no "
                "class token for the sequence head to read. Use its tokenizer with "
                "add_special_tokens (its tokenizer.json post-processor)."
            )

    def _activate(self, logits: Floats2d) -> Floats2d:
        ops = self.model.ops
        if self.multi_label:
            return ops.sigmoid(logits)
        return ops.softmax(logits) if len(logits) else logits

    def set_annotations(self, docs: Iterable[Doc], scores: Floats2d) -> None:
        probs = np.asarray(self.model.ops.to_numpy(self._activate(scores)))
        labels = self.labels
        for doc, row in zip(docs, probs.tolist(), strict=True):
            doc.cats.update(zip(labels, row, strict=True))

    def get_loss(self, examples: Iterable[Example], scores: Floats2d) -> tuple[float, Any]:
        """Cross-entropy (softmax) or binary cross-entropy (sigmoid) against the gold cats;
        labels missing from a doc's gold cats do not count."""
        ops, xp = self.model.ops, self.model.ops.xp
        labels = self.labels
        truth = np.zeros(scores.shape, dtype="f")
        mask = np.zeros(scores.shape, dtype="f")
        for i, eg in enumerate(examples):
            for j, label in enumerate(labels):
                if label in eg.reference.cats:
                    truth[i, j] = eg.reference.cats[label]
                    mask[i, j] = 1.0
        if not self.multi_label:  # a doc counts only with every label given and one positive
            mask[:] = mask.min(axis=1, keepdims=True) * (truth.sum(axis=1, keepdims=True) > 0)
        probs = self._activate(scores)
        t, m = ops.asarray2f(cast(Floats2d, truth)), ops.asarray2f(cast(Floats2d, mask))
        x: Any = scores  # from the logits, stable where probabilities round to 0 or 1
        if self.multi_label:
            loss = (m * (xp.logaddexp(0, x) - t * x)).sum()
        else:
            top = x.max(axis=1, keepdims=True)
            log_z = top + xp.log(xp.exp(x - top).sum(axis=1, keepdims=True))
            loss = -(m * t * (x - log_z)).sum()
        return float(loss), (probs - t) * m

    def _check_examples(self, examples: list[Example]) -> None:
        self._refuse_unknown("category", {c for eg in examples for c in eg.reference.cats})

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        return Scorer.score_cats(
            examples, "cats", labels=self.labels, multi_label=self.multi_label,
            threshold=self.cfg["threshold"],
        )  # fmt: skip
