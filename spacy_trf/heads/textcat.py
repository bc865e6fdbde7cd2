"""Text classification from the encoder: the class token's rows or the mean of the pieces."""

from spacy.tokens import Doc
from thinc.api import Dropout, Linear, Logistic, Model, Softmax_v2, chain
from thinc.types import Floats2d

from ..models.listeners import request_all_layers
from ..pooling import DocPooler, EncoderRows, GradFactor, Layers, check_layers, needs_hidden_states
from ..registry import architectures
from ..types import DocsToOutputsModelT


@architectures("spacy-trf.TransformerTextCat.v1")
def TransformerTextCat(
    tok2vec: DocsToOutputsModelT,
    exclusive_classes: bool,
    pooling: str = "cls",
    layers: Layers = "last",
    grad_factor: GradFactor = 1.0,
    dropout: float = 0.1,
    nO: int | None = None,
) -> Model[list[Doc], Floats2d]:
    """Classify docs for spaCy's textcat (exclusive) and textcat_multilabel.

    tok2vec (Model): The encoder's raw per-doc outputs (not token vectors):
        spacy-trf.TransformerOutputListener.v1 (shared trf component) or
        spacy-trf.TransformerModel.v1 (owned by this component). The key is ``tok2vec`` because
        spaCy's nlp.replace_listeners reads ``model.tok2vec`` of a listening component.
    exclusive_classes (bool): Softmax over labels (textcat) or independent sigmoids.
    pooling ("cls" | "mean"): The class token's row of each window, averaged over the doc's
        windows, or the mean of the doc's piece rows.
    layers, grad_factor: As for spacy-trf.TransformerListener.v1.
    """
    layers = check_layers(layers)
    if needs_hidden_states(layers):
        request_all_layers(tok2vec)
    output: Model = Softmax_v2(nO) if exclusive_classes else chain(Linear(nO), Logistic())
    model: Model = chain(
        tok2vec, EncoderRows(layers, grad_factor), DocPooler(pooling), Dropout(dropout), output
    )
    model.set_ref("output_layer", output)
    model.attrs["multi_label"] = not exclusive_classes
    model.name = "spacy-trf.TransformerTextCat"
    return model
