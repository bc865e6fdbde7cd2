"""What the two components over fine-tuned Hugging Face heads share (``hf_token_classifier``,
``hf_text_classifier``): the model they own, its labels, prediction, training and saving as a
plain Hugging Face directory."""

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example
from spacy.vocab import Vocab
from thinc.api import Model

from .. import defaults
from ..encoder import HFShim, configure_encoder, get_shim
from ..encoder.backends import check_backend
from ..models.transformer import ready
from .batches import pipe_batches
from .guards import TrainingSteps, check_corpus

# Factory settings both components take, with their defaults.
HF_PIPE_DEFAULTS: dict[str, Any] = {
    "window": defaults.WINDOW,
    "stride": defaults.STRIDE,
    "max_batch_pieces": defaults.MAX_BATCH_PIECES,
    "inference": "torch",
    "learn_rate_scale": 1.0,
}


class HFPipe(TrainablePipe):
    """A component that owns a Hugging Face model with a classification head.

    ``source`` (the factory's ``model``) is the hub id or directory it loads at initialize, or
    at its first prediction if the pipeline was never initialized; a saved pipeline loads its
    own copy. The labels are the model's ``id2label``.
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str,
        source: str,
        *,
        max_batch_pieces: int,
        inference: str,
        learn_rate_scale: float,
    ) -> None:
        self.vocab = vocab
        self.model = model
        self.name = name
        self.cfg: dict[str, Any] = {"model": source}
        self.inference = _check_inference(inference)
        configure_encoder(
            self.encoder, max_batch_pieces=max_batch_pieces, learn_rate_scale=learn_rate_scale
        )
        self.shim.set_inference(self.inference)
        self.steps = TrainingSteps(name)

    @property
    def encoder(self) -> Model:
        return self.model.get_ref("encoder")

    @property
    def shim(self) -> HFShim:
        return get_shim(self.encoder)

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's labels in id order (none before the model is loaded)."""
        if not self.shim.loaded:
            return ()
        id2label: Any = self.shim.hf_model.config.id2label
        return tuple(str(id2label[i]) for i in range(len(id2label)))

    def add_label(self, label: str) -> int:
        raise ValueError(
            f"'{self.name}' takes its labels from its model's id2label and cannot add '{label}'. "
            "Fine-tune a model with the labels you need, or use spaCy's own components."
        )

    def _ensure_loaded(self) -> None:
        if not self.shim.loaded:
            self.model.initialize()
            self._check_model()

    def _check_model(self) -> None:
        """Check the loaded model's window and labels (subclasses add their own checks)."""
        ready(self.encoder)

    # Prediction -----------------------------------------------------------------------------

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Annotate docs in batches; with an error handler set, a failing batch runs again doc by
        doc so that only the failing docs go to the handler (pipeline/batches.py)."""
        return pipe_batches(self, stream, batch_size)

    def predict(self, docs: Iterable[Doc]) -> Any:
        self._ensure_loaded()
        return self.model.predict(list(docs))

    def set_inference(self, backend: str) -> None:
        """Switch the prediction backend in this process (see the factory's ``inference``)."""
        self.inference = _check_inference(backend)
        self.shim.set_inference(self.inference)

    # Training -------------------------------------------------------------------------------

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]] | None = None,
        *,
        nlp: Language | None = None,
    ) -> None:
        """Load the model named by the factory's ``model``; check the training examples'
        labels against the model's."""
        check_corpus(self.name, get_examples)
        self.model.initialize()
        self._check_model()
        if get_examples is not None:
            self._check_examples(list(get_examples()))

    def _check_examples(self, examples: list[Example]) -> None:
        """Raise if the gold annotations use labels the model does not have."""

    def _refuse_unknown(self, kind: str, gold: set[str], known: set[str] | None = None) -> None:
        """Raise naming the gold ``kind`` labels that the model's label set lacks."""
        unknown = gold - (set(self.labels) if known is None else known)
        if unknown:
            raise ValueError(
                f"The training data has {kind} labels the model '{self.cfg['model']}' lacks: "
                f"{sorted(unknown)[:10]}. A fine-tuned head keeps its label set: train on data "
                "with its labels, or use spaCy's own component for new labels."
            )

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Any = None,
        losses: dict[str, float] | None = None,
    ) -> dict[str, float]:
        losses = {} if losses is None else losses
        self.steps.watch(losses)
        return cast(dict[str, float], super().update(examples, drop=drop, sgd=sgd, losses=losses))

    def finish_update(self, sgd: Any) -> None:
        """Step the weights; stops training at a nan/inf loss or gradient (guards.py)."""
        self.steps.check(self.shim)
        self.model.finish_update(sgd)

    # Serialization --------------------------------------------------------------------------

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        """Write cfg and the model as a plain Hugging Face directory at path/model."""
        self._ensure_loaded()
        serialize = {
            "vocab": lambda p: self.vocab.to_disk(p, exclude=exclude),
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "model": lambda p: self.shim.to_disk(p),
        }
        util.to_disk(path, serialize, exclude)

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        self._ensure_loaded()
        return cast(bytes, super().to_bytes(exclude=exclude))

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "HFPipe":
        def load_vocab(p: Path) -> None:
            self.vocab.from_disk(p, exclude=exclude)

        def load_model(p: Path) -> None:
            self.shim.from_disk(p)  # the shim keeps its backend across a new model

        deserialize: dict[str, Callable[[Path], None]] = {
            "vocab": load_vocab,
            "cfg": lambda p: self.cfg.update(srsly.read_json(p)),
            "model": load_model,
        }
        util.from_disk(path, deserialize, exclude)
        self._check_model()
        return self

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "HFPipe":
        super().from_bytes(bytes_data, exclude=exclude)
        self._check_model()
        return self


def _check_inference(backend: str) -> str:
    """A valid backend for a model with a head: ONNX Runtime runs bare encoders only."""
    if check_backend(backend) == "onnx":
        raise ValueError(
            'inference = "onnx" runs bare encoders only (the trf component); for a model with a '
            'classification head use "torch", "bf16", "int8", "compile" or "auto".'
        )
    return backend
