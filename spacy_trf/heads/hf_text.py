"""A fine-tuned Hugging Face sequence classifier on spaCy docs: the model's logits for each window
(strided, never truncated), averaged over the doc's windows."""

from typing import Any

from spacy.tokens import Doc
from thinc.api import Model, chain
from thinc.types import Floats2d

from ..encoder import EncoderOptions
from ..models.transformer import transformer_model
from ..pieces import SpanGetter
from ..pooling import DocPooler, EncoderRows


def sigmoid_scores(config: Any) -> bool:
    """Whether a sequence classifier's scores are sigmoids (multi-label, or one label), as
    transformers' text-classification pipeline decides; else a softmax."""
    multi = getattr(config, "problem_type", None) == "multi_label_classification"
    return multi or int(getattr(config, "num_labels", 2)) == 1


def HFTextClassifier(
    name: str,
    get_spans: SpanGetter,
    window: int,
    stride: int,
    tokenizer_config: dict[str, Any],
    transformer_config: dict[str, Any],
) -> Model[list[Doc], Floats2d]:
    """One row of label logits per doc from the model ``name`` (an
    ``AutoModelForSequenceClassification``; loaded at initialize): the mean of its windows'
    logits, which for a doc within one window are the model's own. An empty doc gets zeros."""
    encoder = transformer_model(
        name, get_spans, window, stride, tokenizer_config, transformer_config,
        EncoderOptions(), head="sequence",
    )  # fmt: skip
    model: Model = chain(encoder, EncoderRows("last"), DocPooler("cls"))
    model.set_ref("encoder", encoder)
    model.name = "spacy-trf.HFTextClassifier"
    return model
