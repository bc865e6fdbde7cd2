"""The ``trf`` pipeline component: runs the encoder and stores its output on ``doc._.trf``."""

import uuid
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
from thinc.api import Config, Model, Optimizer, set_dropout_rate

from .. import defaults
from ..encoder import COMPONENT_OPTIONS, configure_encoder, encoder_options, get_shim
from ..encoder.backends import check_attentions, check_backend
from ..models import EncoderListener
from ..models.transformer import ready
from ..stitch import DocTransformerOutput
from ..types import DocsToOutputsModelT
from .annotations import AnnotationSetter
from .batches import pipe_batches
from .cache import OutputCache
from .gradients import Accumulate, BatchGradients, ignore_gradient
from .guards import TrainingSteps, check_corpus
from .replace import ListenerConfig, replace_listener
from .saving import save_atomically

DEFAULT_MODEL_CONFIG = f"""
[model]
@architectures = "spacy-trf.TransformerModel.v1"
name = "{defaults.MODEL}"
window = {defaults.WINDOW}
stride = {defaults.STRIDE}
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
        "max_batch_pieces": defaults.MAX_BATCH_PIECES,
        "set_extra_annotations": {"@annotation_setters": "spacy-trf.null_annotation_setter.v1"},
        "frozen": False,
        "feature_cache_mb": 0,
        "mixed_precision": False,
        "gradient_checkpointing": False,
        "learn_rate_scale": 1.0,
        "inference": "torch",
    },
)
def make_transformer(
    nlp: Language,
    name: str,
    model: DocsToOutputsModelT,
    max_batch_pieces: int,
    set_extra_annotations: AnnotationSetter,
    frozen: bool,
    feature_cache_mb: float,
    mixed_precision: bool,
    gradient_checkpointing: bool,
    learn_rate_scale: float,
    inference: str,
) -> "Transformer":
    """Create a trf component.

    model (Model): A spacy-trf.TransformerModel.v1 (or compatible) architecture.
    max_batch_pieces (int): Most padded pieces (rows x longest window) per forward call.
    set_extra_annotations (Callable): Extra annotations to set, e.g. spacy-trf.doc_tensor.v1.
    frozen (bool): Never update the encoder's weights: it runs in inference mode, without
        backward; the heads listening to it still train.
    feature_cache_mb (float): With frozen, keep up to this many MB of encoder outputs in memory,
        keyed by doc text, tokenization and model, so epochs after the first skip the encoder.
    mixed_precision (bool): Run the encoder under autocast: on GPU bf16 where supported, else
        fp16 with a gradient scaler; on a CPU with native bf16 (AMX, AVX512-BF16) bf16; no
        effect on other CPUs. The weights stay fp32.
    gradient_checkpointing (bool): On GPU, recompute activations in backward to save memory.
        No effect on CPU.
    learn_rate_scale (float): Multiplies the optimizer's learning rate for the encoder's
        weights; the heads keep the full rate (e.g. 0.05 with a rate of 1e-3: heads learn fast,
        the pretrained encoder moves gently).
    inference (str): How the encoder runs at prediction (training always uses PyTorch):
        "torch", "bf16" (autocast), "int8" (dynamic quantization, CPU), "compile" (torch.compile
        of the fp32 model, compiled at the first predictions), "onnx" (ONNX Runtime on
        model.onnx, written by `spacy-trf export-onnx` or when the pipeline is saved) or "auto".
    """
    save_atomically(nlp)
    return Transformer(
        nlp.vocab,
        model,
        set_extra_annotations,
        name=name,
        max_batch_pieces=max_batch_pieces,
        frozen=frozen,
        feature_cache_mb=feature_cache_mb,
        mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing,
        learn_rate_scale=learn_rate_scale,
        inference=inference,
    )


class Transformer(TrainablePipe):
    """Runs a Hugging Face encoder over Docs and sets ``doc._.trf``.

    Downstream components listen to it (spacy-trf.TransformerListener.v1): while training it
    encodes each batch once, collects every listener's gradient and runs one backward
    (gradients.py).
    """

    def __init__(
        self,
        vocab: Vocab,
        model: DocsToOutputsModelT,
        set_extra_annotations: AnnotationSetter,
        *,
        name: str = "trf",
        max_batch_pieces: int = defaults.MAX_BATCH_PIECES,
        frozen: bool = False,
        feature_cache_mb: float = 0,
        mixed_precision: bool = False,
        gradient_checkpointing: bool = False,
        learn_rate_scale: float = 1.0,
        inference: str = "torch",
    ) -> None:
        if not callable(set_extra_annotations):
            raise ValueError(
                "set_extra_annotations must be an annotation setter, e.g. "
                f"spacy-trf.doc_tensor.v1; got {set_extra_annotations!r}."
            )
        if not isinstance(feature_cache_mb, int | float) or feature_cache_mb < 0:
            raise ValueError(
                f"feature_cache_mb must be a number of megabytes >= 0, got {feature_cache_mb!r}."
            )
        self.vocab = vocab
        self.model = model
        self.name = name
        self.set_extra_annotations = set_extra_annotations
        self.cfg: dict[str, Any] = {
            "max_batch_pieces": max_batch_pieces,
            "frozen": bool(frozen),
            "feature_cache_mb": feature_cache_mb,
            "mixed_precision": bool(mixed_precision),
            "gradient_checkpointing": bool(gradient_checkpointing),
            "learn_rate_scale": learn_rate_scale,
        }
        # Not in cfg (cfg.json would override a config given at load): config.cfg keeps it.
        self.inference = check_backend(inference)
        self.listener_map: dict[str, list[EncoderListener]] = {}
        self.cache = OutputCache(feature_cache_mb)
        self._cache_id = uuid.uuid4().hex  # new weights (load, initialize) -> new cache keys
        self.gradients = BatchGradients(name, self._step)
        self.steps = TrainingSteps(name)
        self._apply_cfg()
        model.attrs["replace_listener"] = replace_listener
        model.attrs["replace_listener_cfg"] = ListenerConfig(get_shim(model))

    def _apply_cfg(self) -> None:
        options = configure_encoder(self.model, **{k: self.cfg[k] for k in COMPONENT_OPTIONS})
        self.cfg["learn_rate_scale"] = float(options.learn_rate_scale)
        self.set_inference(self.inference)

    def set_inference(self, backend: str) -> None:
        """Switch the prediction backend (see ``make_transformer``) in this process.
        To save the choice, set it in the config (e.g. spacy.load(path, config=...))."""
        backend = check_backend(backend)
        check_attentions(backend, encoder_options(self.model).output_attentions)
        self.inference = backend
        get_shim(self.model).set_inference(backend)

    @property
    def frozen(self) -> bool:
        return bool(self.cfg["frozen"])

    # Listeners ----------------------------------------------------------------------------

    @property
    def listeners(self) -> list[EncoderListener]:
        return [m for c in self.listening_components for m in self.listener_map[c]]

    @property
    def listening_components(self) -> list[str]:
        return list(self.listener_map.keys())

    def add_listener(self, listener: EncoderListener, component_name: str) -> None:
        """Register a listener of a downstream component (called when the pipeline is linked)."""
        self.listener_map.setdefault(component_name, [])
        if listener not in self.listener_map[component_name]:
            self.listener_map[component_name].append(listener)
        listener.upstream = self.model
        if listener.needs_hidden_states:
            configure_encoder(self.model, output_hidden_states=True)

    def remove_listener(self, listener: EncoderListener, component_name: str) -> bool:
        """Unregister a listener (e.g. nlp.replace_listeners gave it its own encoder)."""
        if listener in self.listener_map.get(component_name, []):
            self.listener_map[component_name].remove(listener)
            if not self.listener_map[component_name]:
                del self.listener_map[component_name]
            listener.upstream = None
            return True
        return False

    def find_listeners(self, component: Any) -> None:
        """Add the listeners in component's model that listen to this component (or to "*")."""
        names = ("*", self.name)
        model = getattr(component, "model", None)
        if isinstance(model, Model):
            for node in model.walk():
                if isinstance(node, EncoderListener) and node.upstream_name in names:
                    self.add_listener(node, component.name)

    # Prediction -----------------------------------------------------------------------------

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Annotate docs in batches; with an error handler set, a failing batch runs again doc by
        doc so that only the failing docs go to the handler (pipeline/batches.py)."""
        return pipe_batches(self, stream, batch_size)

    def predict(self, docs: Iterable[Doc]) -> list[DocTransformerOutput]:
        docs = list(docs)
        if not (self.frozen and self.cache.max_bytes > 0):
            return self.model.predict(docs)
        shim = get_shim(self.model)
        keys = [self.cache.key(f"{self._cache_id}:{shim.inference}", doc) for doc in docs]
        found = [self.cache.get(key) for key in keys]
        missing = [i for i, out in enumerate(found) if out is None]
        if missing:
            new = self.model.predict([docs[i] for i in missing])
            for i, out in zip(missing, new, strict=True):
                found[i] = self.cache.put(keys[i], out)
        return [out for out in found if out is not None]

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
        if nlp is not None:
            save_atomically(nlp)  # also where the component came from another pipeline (source)
        if self.listener_map:  # heads will learn from these examples
            check_corpus(self.name, get_examples)
        self.model.initialize()
        self._new_weights()

    def _new_weights(self) -> None:
        self._cache_id = uuid.uuid4().hex
        self.cache.clear()

    # Training -------------------------------------------------------------------------------

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optimizer | None = None,
        losses: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Encode a batch and pass it to the listeners; their gradients come back to this
        component, which runs one backward when all have arrived (or at finish_update).

        drop (float): The dropout rate of the model's Thinc layers, as for spaCy's components;
            the HF encoder's own dropout comes from its config (transformer_config).
        """
        self.gradients.flush()
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        self.steps.watch(losses)
        docs = [eg.predicted for eg in examples]
        if not docs:
            return losses
        listeners = self.listeners
        accumulate: Accumulate = ignore_gradient
        if self.frozen or not listeners:
            with get_shim(self.model).use_backend("torch"):
                outputs = self.predict(docs)  # heads train on the model's own features
        else:
            set_dropout_rate(self.model, drop)
            outputs, backprop = self.model.begin_update(docs)
            accumulate = self.gradients.start(cast(Any, backprop), len(docs), len(listeners), sgd)
        for doc, out in zip(docs, outputs, strict=True):
            doc._.trf = out
        batch_id = EncoderListener.get_batch_id(docs)
        for listener in listeners:
            listener.receive(batch_id, outputs, accumulate)
        return losses

    def finish_update(self, sgd: Optimizer) -> None:
        """Update the encoder's weights (unless frozen) from the gradients received so far.

        nlp.update(sgd=...) calls this right after this component's update, before any listener
        has sent its gradient: the step then waits until they have.
        """
        if self.gradients.defer_step(sgd):
            return
        self.gradients.flush()
        self._step(sgd)

    def flush_gradients(self) -> None:
        """Run the backward of the batch in flight with the gradients its listeners sent so far
        (data-parallel training sums the gradients between the backward and the step)."""
        self.gradients.flush()

    def _step(self, sgd: Optimizer) -> None:
        """Thinc's update of the weights that got a gradient since the last step (the HF
        encoder's at ``learn_rate_scale`` times the rate), here or from other workers. Stops
        training at a nan/inf loss or gradient (guards.py)."""
        shim = get_shim(self.model)
        self.steps.check(shim, self.listening_components)
        if self.frozen:
            return
        if not self.gradients.has_gradient and not shim.has_gradients:
            return
        self.gradients.has_gradient = False
        self.model.finish_update(sgd)

    # Serialization --------------------------------------------------------------------------

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
            self._new_weights()

        def load_cfg(p: Path) -> None:
            self.cfg.update(srsly.read_json(p))
            self._apply_cfg()

        deserialize: dict[str, Callable[[Path], None]] = {
            "vocab": load_vocab,
            "cfg": load_cfg,
            "model": load_model,
        }
        util.from_disk(path, deserialize, exclude)
        ready(self.model)
        return self

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "Transformer":
        super().from_bytes(bytes_data, exclude=exclude)
        self._apply_cfg()
        self._new_weights()
        ready(self.model)
        return self
