"""``spacy-trf export-hf``: a component trained on a spacy-trf encoder as a plain Hugging Face
classification model (encoder, head, ``id2label`` and tokenizer), which ``transformers.pipeline``
loads without spacy-trf.

- ``tagger`` / ``morphologizer`` (spaCy's Tagger.v2 on a ``TransformerListener`` or an owned
  ``Tok2VecTransformer``, last layer) -> ``AutoModelForTokenClassification``: the softmax layer
  becomes the per-piece classifier. With ``reduce_first`` pooling a token's tag is exactly the
  HF model's first-piece tag; other poolings are approximated by it (the report says so).
- ``textcat`` / ``textcat_multilabel`` (``TransformerTextCat.v1``, ``pooling = "cls"``, last
  layer) -> ``AutoModelForSequenceClassification`` (BERT or RoBERTa family): the HF head's tanh
  layer is set to a small multiple of the identity, on which tanh is linear to float precision,
  and the output layer scaled back, so the head computes the spaCy layer's logits.
- ``hf_token_classifier`` / ``hf_text_classifier``: their own model, as it is.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import spacy
import torch
from spacy.language import Language
from thinc.api import Model
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from ..encoder import HFShim, get_shim, is_encoder
from ..encoder.loading import save_hf
from ..models import EncoderListener
from ..pipeline.hf_pipe import HFPipe

TOKEN_FACTORIES = ("tagger", "morphologizer")
TEXT_FACTORIES = ("textcat", "textcat_multilabel")
# tanh(EPSILON * x) / EPSILON == x to float32 precision for the hidden values of encoders.
EPSILON = 1e-4
# Sequence heads whose hidden layer is dense + tanh on the class token (the BERT pooler is
# recognised by its activation).
TANH_HEADS = ("RobertaClassificationHead", "XLMRobertaClassificationHead",
              "CamembertClassificationHead")  # fmt: skip
CHECK_TEXT = "Exported heads must score this probe text as the spaCy component does."
NOT_EXPRESSIBLE = {
    "ner": "transition-based",
    "parser": "transition-based",
    "beam_ner": "transition-based",
    "beam_parser": "transition-based",
}


class ExportError(ValueError):
    """A component that cannot be expressed as a Hugging Face classification model."""


@dataclass
class ExportReport:
    """What ``export_hf`` wrote: the HF class, the labels, and how exact the head is."""

    output: Path
    hf_class: str
    labels: tuple[str, ...]
    exact: bool
    notes: list[str] = field(default_factory=list)


def export_hf(pipeline: str | Path | Language, output: str | Path, component: str) -> ExportReport:
    """Write the pipeline's ``component`` to ``output`` as a Hugging Face model directory."""
    nlp = pipeline if isinstance(pipeline, Language) else spacy.load(pipeline)
    if component not in nlp.pipe_names:
        raise ExportError(
            f"The pipeline has no component '{component}'; it has {', '.join(nlp.pipe_names)}."
        )
    pipe = nlp.get_pipe(component)
    factory = nlp.get_pipe_meta(component).factory
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(f"'{output}' exists and is not empty: choose a new output directory.")
    if isinstance(pipe, HFPipe):
        save_hf(pipe.shim.hf_model, pipe.shim.tokenizer, output)
        name = type(pipe.shim.hf_model).__name__
        return ExportReport(output, name, pipe.labels, exact=True)
    if factory in TOKEN_FACTORIES:
        return _export_tokens(pipe, component, output)
    if factory in TEXT_FACTORIES:
        return _export_text(nlp, pipe, component, factory, output)
    why = NOT_EXPRESSIBLE.get(factory, f"'{factory}' components have no per-token or per-text head")
    raise ExportError(
        f"'{component}' ({why}) cannot be expressed as a Hugging Face classification model: "
        "one label per piece or per text is all they hold. Train a token classifier in spaCy "
        "instead: save your encoder with an AutoModelForTokenClassification head over IOB2 labels "
        "(from_pretrained(ENCODER, id2label=...)), train it with the hf_token_classifier "
        'component (annotate = "ents") and export that.'
    )


def _export_tokens(pipe: Any, name: str, output: Path) -> ExportReport:
    model: Model = pipe.model
    tok2vec = _ref(model, "tok2vec", name)
    shim, encoder = _encoder(tok2vec, name)
    _check_last_layer(tok2vec, name)
    pooling = _pooling_name(tok2vec, name)
    W, b = _output_weights(model.layers[-1], name)
    labels = tuple(str(label) for label in pipe.labels)
    hf: Any = _new_head(AutoModelForTokenClassification, shim, labels, W.shape[1], name)
    with torch.no_grad():
        hf.classifier.weight.copy_(torch.from_numpy(W))
        hf.classifier.bias.copy_(torch.from_numpy(b))
    save_hf(hf, shim.tokenizer, output)
    exact, notes = _window_notes(encoder, shim, name)
    if pooling != "reduce_first":
        exact = False
        notes.append(
            f"'{name}' pools a token's pieces with {pooling}; the HF model tags every piece, and "
            "its first piece's tag stands for the token (exact only with reduce_first)."
        )
    return ExportReport(output, type(hf).__name__, labels, exact, notes)


def _export_text(nlp: Language, pipe: Any, name: str, factory: str, output: Path) -> ExportReport:
    model: Model = pipe.model
    pooler = next((n for n in model.walk() if n.name == "spacy-trf.DocPooler"), None)
    if model.name != "spacy-trf.TransformerTextCat" or pooler is None:
        raise ExportError(
            f"'{name}' is not a spacy-trf.TransformerTextCat.v1 on a trf encoder, so it has no HF "
            'equivalent: train it with that architecture (pooling = "cls").'
        )
    if pooler.attrs["pooling"] != "cls":
        raise ExportError(
            f"'{name}' pools the mean of the pieces; Hugging Face sequence classifiers read the "
            'class token. Train it with pooling = "cls" to export it.'
        )
    tok2vec = model.layers[0]
    shim, encoder = _encoder(tok2vec, name)
    _check_last_layer(model, name)
    output_layer = model.get_ref("output_layer")
    linear = output_layer.layers[0] if output_layer.layers else output_layer
    W, b = _output_weights(linear, name)
    labels = tuple(str(label) for label in pipe.labels)
    multi = bool(model.attrs.get("multi_label")) or factory == "textcat_multilabel"
    hf = _new_head(AutoModelForSequenceClassification, shim, labels, W.shape[1], name, multi)
    _set_linear_sequence_head(hf, W, b, name)
    _check_same_scores(nlp, name, hf, shim, multi)
    save_hf(hf, shim.tokenizer, output)
    exact, notes = _window_notes(encoder, shim, name)
    return ExportReport(output, type(hf).__name__, labels, exact, notes)


def _ref(model: Model, ref: str, name: str) -> Model:
    if not model.has_ref(ref):
        raise ExportError(f"'{name}' has no {ref} layer to read an encoder from.")
    return model.get_ref(ref)


def _encoder(tok2vec: Model, name: str) -> tuple[HFShim, Model]:
    """The encoder that ``tok2vec`` reads (a trf component's or its own) and its HFShim."""
    if tok2vec.name != "spacy-trf.TokenVectors" and tok2vec.name != "spacy-trf.TransformerTextCat":
        if any(n.name == "spacy-trf.TokenVectors" for n in tok2vec.walk()):
            raise ExportError(
                f"'{name}' concatenates the transformer's rows with other features "
                f"({tok2vec.name}, e.g. hash embeddings of spaCy's token attributes), which an HF "
                "model does not compute. Train it on a TransformerListener alone to export it."
            )
    for node in tok2vec.walk():
        if isinstance(node, EncoderListener):
            if node.upstream is None:
                raise ExportError(f"'{name}' listens to no trf component in this pipeline.")
            return get_shim(node.upstream), node.upstream
        if is_encoder(node):
            return get_shim(node), node
    raise ExportError(
        f"'{name}' does not read a spacy-trf encoder ({tok2vec.name}), so there is no HF "
        "encoder to export with it."
    )


def _check_last_layer(model: Model, name: str) -> None:
    for node in model.walk():
        if node.name == "spacy-trf.EncoderRows" and node.attrs["layers"] != "last":
            raise ExportError(
                f"'{name}' reads layers = {node.attrs['layers']!r}; a Hugging Face head reads the "
                'last layer only. Train it with layers = "last" to export it.'
            )


def _pooling_name(tok2vec: Model, name: str) -> str:
    pooler = next((n for n in tok2vec.walk() if n.name == "spacy-trf.TokenPooler"), None)
    if pooler is None:
        raise ExportError(f"'{name}' has no token pooling over the encoder's pieces.")
    return str(pooler.layers[0].name)


def _output_weights(layer: Model, name: str) -> tuple[np.ndarray, np.ndarray]:
    while layer.name.startswith("with_") and len(layer.layers) == 1:  # with_array(softmax)
        layer = layer.layers[0]
    if layer.name not in ("softmax", "linear") or not layer.has_param("W"):
        raise ExportError(
            f"'{name}' ends in '{layer.name}', not a linear or softmax layer over the encoder's "
            "rows, so an HF head cannot hold it."
        )
    W = np.asarray(layer.ops.to_numpy(layer.get_param("W")), dtype="f")
    b = np.asarray(layer.ops.to_numpy(layer.get_param("b")), dtype="f")
    return W, b


def _new_head(
    auto: Any, shim: HFShim, labels: tuple[str, ...], width: int, name: str, multi: bool = False
) -> PreTrainedModel:
    """An HF model of the ``auto`` class with the encoder's fine-tuned weights and a new head."""
    encoder = shim.hf_model
    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    if width != config.hidden_size:
        raise ExportError(
            f"'{name}' reads {width} columns but the encoder's hidden size is "
            f"{config.hidden_size}: only a head directly on the encoder's rows can be exported."
        )
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.problem_type = "multi_label_classification" if multi else None
    try:
        hf = auto.from_config(config)
    except ValueError as err:
        raise ExportError(f"'{config.model_type}' models have no {auto.__name__}: {err}") from err
    state = encoder.state_dict()
    missing, unexpected = hf.base_model.load_state_dict(state, strict=False)
    # The pooler (BERT) is absent from token classifiers and new in sequence classifiers.
    if any(not k.startswith("pooler.") for k in [*missing, *unexpected]):
        raise ExportError(
            f"The encoder's weights do not fit {type(hf).__name__} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})."
        )
    return cast(PreTrainedModel, hf.eval())


def _set_linear_sequence_head(hf: Any, W: np.ndarray, b: np.ndarray, name: str) -> None:
    """Make the HF sequence head compute ``class token @ W.T + b``: its dense + tanh layer
    becomes EPSILON times the identity (linear there), its output layer W / EPSILON."""
    width = W.shape[1]
    head: Any = getattr(hf, "classifier", None)
    pooler: Any = getattr(hf.base_model, "pooler", None)
    if type(head).__name__ in TANH_HEADS:  # RoBERTa, XLM-R, CamemBERT: torch.tanh inside
        dense, out = head.dense, head.out_proj
    elif isinstance(getattr(pooler, "activation", None), torch.nn.Tanh) and hasattr(head, "weight"):
        dense, out = pooler.dense, head  # BERT: pooler (dense + tanh) -> classifier
    else:
        raise ExportError(
            f"'{name}' cannot be exported onto a {type(hf).__name__}: its head is not the BERT "
            "or RoBERTa one (class token -> dense -> tanh -> linear)."
        )
    with torch.no_grad():
        dense.weight.copy_(torch.eye(width) * EPSILON)
        dense.bias.zero_()
        out.weight.copy_(torch.from_numpy(W / EPSILON))
        out.bias.copy_(torch.from_numpy(b))


def _window_notes(encoder: Model, shim: HFShim, name: str) -> tuple[bool, list[str]]:
    """Whether the spaCy component reads texts as the HF model will (whole docs), and notes."""
    from ..encoder.loading import max_sequence_length

    get_spans = encoder.attrs.get("get_spans")
    window, stride = encoder.attrs.get("window"), encoder.attrs.get("stride")
    assert shim.pieces is not None
    limit = max_sequence_length(shim.hf_model, shim.tokenizer)
    notes = [
        f"'{name}' reads windows of {window} pieces (stride {stride}); transformers' pipelines "
        f"read a text whole{f' up to {limit} positions' if limit else ''}, so the two agree on "
        f"texts of up to {window} pieces."
    ]
    whole_docs = getattr(get_spans, "__name__", "") == "get_doc_spans"
    if not whole_docs:
        notes.append(
            f"'{name}' reads spans of its docs (not whole docs), which the HF model does not."
        )
    return whole_docs, notes


def _check_same_scores(nlp: Language, name: str, hf: Any, shim: HFShim, multi: bool) -> None:
    """Raise unless the HF model scores a probe text as the spaCy component does."""
    doc = nlp(CHECK_TEXT)
    enc = shim.tokenizer(CHECK_TEXT, return_tensors="pt")
    with torch.no_grad():
        logits = hf.to(shim.device)(**{k: v.to(shim.device) for k, v in enc.items()}).logits[0]
    scores = torch.sigmoid(logits) if multi else torch.softmax(logits, -1)
    labels = [hf.config.id2label[i] for i in range(len(scores))]
    diff = max(abs(doc.cats[label] - float(s)) for label, s in zip(labels, scores, strict=True))
    if diff > 1e-3:
        raise ExportError(
            f"The exported head of '{name}' scores a probe text {diff:.2g} away from the spaCy "
            f"component ({type(hf).__name__}), so it is not exported. Please report this."
        )
