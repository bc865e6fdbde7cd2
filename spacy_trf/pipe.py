"""The ``trf`` pipeline component: runs the encoder and stores its output on ``doc._.trf``."""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer

from .hooks import AnnotationSetter
from .model import check_window, get_shim
from .output import DocTransformerOutput

DEFAULT_MODEL_CONFIG = """
[model]
@architectures = "spacy-trf.TransformerModel.v1"
name = "sentence-transformers/all-MiniLM-L6-v2"
window = 126
stride = 110
output_hidden_states = false
output_attentions = false

[model.get_spans]
@span_getters = "spacy-trf.doc_spans.v1"

[model.tokenizer_config]

[model.transformer_config]
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]

if not Doc.has_extension("trf"):
    Doc.set_extension("trf", default=None)


@Language.factory(
    "trf",
    assigns=["doc._.trf"],
    default_config={
        "model": DEFAULT_MODEL,
        "max_batch_pieces": 8192,
        "set_extra_annotations": {"@annotation_setters": "spacy-trf.null_annotation_setter.v1"},
        "frozen": False,
    },
)
def make_transformer(
    nlp: Language,
    name: str,
    model: Model[list[Doc], list[DocTransformerOutput]],
    max_batch_pieces: int,
    set_extra_annotations: AnnotationSetter,
    frozen: bool,
) -> "Transformer":
    """Create a trf component.

    model (Model): A spacy-trf.TransformerModel.v1 (or compatible) architecture.
    max_batch_pieces (int): Most padded pieces (rows x longest window) per forward call.
    set_extra_annotations (Callable): Extra annotations to set, e.g. spacy-trf.doc_tensor.v1.
    frozen (bool): Never update the encoder's weights (it runs without backward).
    """
    return Transformer(
        nlp.vocab,
        model,
        set_extra_annotations,
        name=name,
        max_batch_pieces=max_batch_pieces,
        frozen=frozen,
    )


class Transformer(TrainablePipe):
    """Runs a Hugging Face encoder over Docs and sets ``doc._.trf``."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model[list[Doc], list[DocTransformerOutput]],
        set_extra_annotations: AnnotationSetter,
        *,
        name: str = "trf",
        max_batch_pieces: int = 8192,
        frozen: bool = False,
    ) -> None:
        if (
            not isinstance(max_batch_pieces, int)
            or isinstance(max_batch_pieces, bool)
            or max_batch_pieces < 1
        ):
            raise ValueError(
                f"max_batch_pieces must be a positive integer, got {max_batch_pieces!r}."
            )
        if not callable(set_extra_annotations):
            raise ValueError(
                "set_extra_annotations must be an annotation setter, e.g. "
                f"spacy-trf.doc_tensor.v1; got {set_extra_annotations!r}."
            )
        self.vocab = vocab
        self.model = model
        self.name = name
        self.set_extra_annotations = set_extra_annotations
        self.cfg: dict[str, Any] = {"max_batch_pieces": max_batch_pieces, "frozen": bool(frozen)}
        model.attrs["max_batch_pieces"] = max_batch_pieces

    @property
    def frozen(self) -> bool:
        return bool(self.cfg["frozen"])

    def predict(self, docs: Iterable[Doc]) -> list[DocTransformerOutput]:
        return self.model.predict(list(docs))

    def set_annotations(self, docs: Iterable[Doc], outputs: list[DocTransformerOutput]) -> None:
        docs = list(docs)
        for doc, output in zip(docs, outputs, strict=True):
            doc._.trf = output
        self.set_extra_annotations(docs, outputs)

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]] | None = None,
        *,
        nlp: Language | None = None,
    ) -> None:
        """Load the encoder named in the config (from the hub cache or a local directory)."""
        self.model.initialize()

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optimizer | None = None,
        losses: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Annotate the predicted docs; the encoder has no loss of its own to train on."""
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        docs = [eg.predicted for eg in examples]
        if docs:
            self.set_annotations(docs, self.predict(docs))
        return losses

    def finish_update(self, sgd: Optimizer) -> None:
        if not self.frozen:
            self.model.finish_update(sgd)

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        """Write cfg and the encoder as a plain Hugging Face directory at path/model."""
        serialize = {
            "vocab": lambda p: self.vocab.to_disk(p, exclude=exclude),
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "model": lambda p: get_shim(self.model).to_disk(p),
        }
        util.to_disk(path, serialize, exclude)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "Transformer":
        def load_vocab(p: Path) -> None:
            self.vocab.from_disk(p, exclude=exclude)

        def load_model(p: Path) -> None:
            get_shim(self.model).from_disk(p)

        def load_cfg(p: Path) -> None:
            self.cfg.update(srsly.read_json(p))
            self.model.attrs["max_batch_pieces"] = self.cfg["max_batch_pieces"]

        deserialize: dict[str, Callable[[Path], None]] = {
            "vocab": load_vocab,
            "cfg": load_cfg,
            "model": load_model,
        }
        util.from_disk(path, deserialize, exclude)
        check_window(self.model)
        return self

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "Transformer":
        super().from_bytes(bytes_data, exclude=exclude)
        self.model.attrs["max_batch_pieces"] = self.cfg["max_batch_pieces"]
        check_window(self.model)
        return self
