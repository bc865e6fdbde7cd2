"""Inference backends: how the encoder runs at prediction time (training always uses PyTorch).

- ``"torch"``: the PyTorch model as loaded (with ``mixed_precision``: autocast, on CUDA or a CPU
  with native bf16).
- ``"bf16"``: PyTorch under bf16 autocast, on a CPU that supports it or a GPU (``bf16.py``).
- ``"int8"``: a copy with dynamically quantized int8 Linear layers (CPU; ``int8.py``).
- ``"compile"``: a copy compiled by ``torch.compile``: fp32 with fused kernels (``compile.py``).
- ``"onnx"``: ONNX Runtime on the exported model, saved as ``model.onnx`` (``onnx.py``).
- ``"auto"``: the fastest of these whose outputs agree with fp32, measured once per machine
  (``auto.py``; what init-config writes).

``InferenceBackends`` owns the choice and the models converted for it; an ``HFShim`` holds one.
Converted models are built from the current weights and rebuilt once the weights version changes,
so evaluation during training sees the trained weights. Threads may predict at once: each
converted model and ONNX session is built once, under a lock.
"""

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..streams import Predict, output_streams
from . import auto
from .bf16 import bf16_autocast
from .compile import CompileCalls, compile_model
from .int8 import quantize_int8
from .onnx import ONNX_FILE, OnnxModel, export_onnx, onnx_session, output_names

INFERENCE_BACKENDS = ("torch", "bf16", "int8", "compile", "onnx", "auto")

__all__ = [
    "INFERENCE_BACKENDS",
    "ONNX_FILE",
    "Converted",
    "InferenceBackends",
    "Predict",
    "check_attentions",
    "check_backend",
]


def check_backend(name: Any) -> str:
    """Return a valid backend name or raise naming the choices."""
    if name not in INFERENCE_BACKENDS:
        raise ValueError(
            f"inference must be one of {', '.join(map(repr, INFERENCE_BACKENDS))}; got {name!r}."
        )
    return str(name)


def check_attentions(backend: str, output_attentions: bool) -> None:
    """Raise if the backend cannot return attention weights but they are asked for."""
    if backend == "onnx" and output_attentions:
        raise ValueError(
            'output_attentions is not available with inference = "onnx": use "torch", "bf16" '
            'or "int8".'
        )


@dataclass(frozen=True)
class Converted:
    """A model converted for one backend from one version of the weights."""

    backend: str
    version: int
    model: torch.nn.Module
    calls: CompileCalls | None = None  # "compile": serializes the calls that compile


class InferenceBackends:
    """The prediction backend of one encoder, and the models converted for it.

    Copies (``copy.deepcopy``, e.g. by nlp.replace_listeners) start afresh with "torch", and
    pickled ones with their backend: converted models and ONNX Runtime sessions are not copied.
    """

    def __init__(self, name: str = "torch") -> None:
        self.name = check_backend(name)
        self._converted: Converted | None = None
        self._onnx: OnnxModel | None = None
        self._auto: auto.Choice | None = None  # what "auto" stands for, once measured
        self._lock = threading.Lock()  # builds converted models and ONNX sessions once
        self._choosing = threading.Lock()  # measures "auto" once

    def __deepcopy__(self, memo: dict[int, Any]) -> "InferenceBackends":
        return InferenceBackends()

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return InferenceBackends, (self.name,)

    @property
    def converted(self) -> Converted | None:
        """The int8 or compiled copy in use, if any."""
        return self._converted

    @property
    def chosen(self) -> auto.Choice | None:
        """What ``"auto"`` chose in this process (after its first prediction), if it did."""
        return self._auto

    @property
    def onnx(self) -> OnnxModel | None:
        """The exported (or saved) ONNX model, if any."""
        return self._onnx

    def select(self, name: str) -> None:
        """Switch the backend; converted models of other backends are dropped."""
        self.name = check_backend(name)
        in_use = self._auto.backend if name == "auto" and self._auto is not None else name
        if self._converted is not None and self._converted.backend != in_use:
            self._converted = None
        if name != "onnx" and self._onnx is not None:
            self._onnx.session = None

    @contextmanager
    def using(self, name: str) -> Iterator[None]:
        """Predict with ``name`` inside the block, keeping the converted models."""
        previous, self.name = self.name, check_backend(name)
        try:
            yield
        finally:
            self.name = previous

    def forget(self) -> None:
        """Drop the converted model and what "auto" chose (the model or the device changed)."""
        self._converted = None
        self._auto = None

    def found_onnx(self, path: Path, version: int) -> None:
        """Note a saved ``model.onnx`` of weights ``version``; it is read now only if used, since
        the directory may be temporary."""
        data = path.read_bytes() if self.name == "onnx" else None
        self._onnx = OnnxModel(data, version, path)

    def onnx_to_save(
        self, hf_model: torch.nn.Module, version: int, input_names: tuple[str, ...]
    ) -> bytes | None:
        """The ONNX file to save beside the weights: with "onnx" only."""
        if self.name != "onnx":
            return None
        return self._onnx_model(hf_model, version, input_names).read()

    def predictor(
        self,
        hf_model: torch.nn.Module,
        version: int,
        flags: dict[str, bool],
        autocast: AbstractContextManager,
        input_names: tuple[str, ...],
    ) -> Predict:
        """A prediction function of the current backend; ``flags`` are the HF forward's."""
        if self.name == "auto":
            return self._auto_predictor(hf_model, version, flags, input_names)
        return self._predictor(self.name, hf_model, version, flags, autocast, input_names)

    def _predictor(
        self,
        backend: str,
        hf_model: torch.nn.Module,
        version: int,
        flags: dict[str, bool],
        autocast: AbstractContextManager,
        input_names: tuple[str, ...],
    ) -> Predict:
        device = next(hf_model.parameters()).device
        want_hidden = bool(flags.get("output_hidden_states"))
        if backend == "onnx":
            if _has_head(hf_model):
                raise ValueError(
                    'inference = "onnx" runs bare encoders only (the trf component); for a model '
                    'with a classification head use "torch", "bf16" or "int8".'
                )
            check_attentions(backend, bool(flags.get("output_attentions")))
            return self._onnx_predictor(hf_model, version, input_names, want_hidden)
        model, calls = hf_model, None
        if backend == "bf16":
            autocast = bf16_autocast(device)
        elif backend in ("int8", "compile"):
            autocast = nullcontext()  # fp32 copies, also under mixed_precision
        if backend == "int8":
            if device.type != "cpu":
                raise ValueError(
                    'inference = "int8" (dynamic quantization) runs on CPU only; on a GPU use '
                    '"bf16".'
                )
            model = self._convert(hf_model, version, backend, quantize_int8).model
        elif backend == "compile":
            converted = self._convert(hf_model, version, backend, compile_model)
            model, calls = converted.model, converted.calls

        def predict(inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
            n_windows, length = next(iter(inputs.values())).shape
            serial = calls.run(n_windows) if calls is not None else nullcontext()
            with torch.inference_mode(), autocast, serial:
                out = model(**inputs, **flags)
            return output_streams(out, want_hidden, length), getattr(out, "attentions", None)

        return predict

    def _auto_predictor(
        self,
        hf_model: torch.nn.Module,
        version: int,
        flags: dict[str, bool],
        input_names: tuple[str, ...],
    ) -> Predict:
        """The chosen backend's prediction function; before the choice is made, one that makes
        it on its first batch. Candidates run without the caller's autocast: "torch" is fp32."""

        def build(backend: str) -> Predict:
            return self._predictor(backend, hf_model, version, flags, nullcontext(), input_names)

        if self._auto is not None:
            return build(self._auto.backend)
        device = next(hf_model.parameters()).device

        def predict(inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
            with self._choosing:
                if self._auto is None:
                    key = auto.machine_key(hf_model, device, flags)
                    runs = {name: _lazy(build, name) for name in auto.candidates(device)}
                    self._auto = auto.choose(key, runs, inputs, _has_head(hf_model))
                    with self._lock:  # free a candidate's copy that was not chosen
                        if self._converted and self._converted.backend != self._auto.backend:
                            self._converted = None
                chosen = self._auto.backend
            return build(chosen)(inputs)

        return predict

    def _convert(
        self,
        hf_model: torch.nn.Module,
        version: int,
        backend: str,
        convert: Callable[[torch.nn.Module], torch.nn.Module],
    ) -> Converted:
        """``convert`` applied to an eval-mode copy, cached until the weights or backend change."""
        with self._lock:
            cached = self._converted
            if cached is not None and (cached.backend, cached.version) == (backend, version):
                return cached
            self._converted = None  # free the previous one before building the next
            model = convert(copy.deepcopy(hf_model).eval())
            calls = CompileCalls() if backend == "compile" else None
            self._converted = Converted(backend, version, model, calls)
            return self._converted

    def _onnx_model(
        self, hf_model: torch.nn.Module, version: int, input_names: tuple[str, ...]
    ) -> OnnxModel:
        """The loaded ONNX model while the weights are unchanged, else a new export."""
        with self._lock:
            return self._current_onnx(hf_model, version, input_names)

    def _onnx_session(
        self, hf_model: torch.nn.Module, version: int, input_names: tuple[str, ...]
    ) -> Any:
        """The ONNX Runtime session of the current export, opened once."""
        with self._lock:
            current = self._current_onnx(hf_model, version, input_names)
            return onnx_session(current, next(hf_model.parameters()).device)

    def _current_onnx(
        self, hf_model: torch.nn.Module, version: int, input_names: tuple[str, ...]
    ) -> OnnxModel:
        # Called under self._lock.
        current = self._onnx
        if current is None or current.version != version or current.read() is None:
            current = self._onnx = OnnxModel(export_onnx(hf_model, input_names), version)
        return current

    def _onnx_predictor(
        self,
        hf_model: Any,
        version: int,
        input_names: tuple[str, ...],
        want_hidden: bool,
    ) -> Predict:
        device = next(hf_model.parameters()).device
        outputs = output_names(hf_model.config.num_hidden_layers, want_hidden)

        def predict(inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
            # exported or opened once, at need
            session = self._onnx_session(hf_model, version, input_names)
            result = session.run(outputs, {name: t.cpu().numpy() for name, t in inputs.items()})
            return [torch.from_numpy(r).to(device) for r in result], None

        return predict


def _lazy(build: Callable[[str], Predict], backend: str) -> Predict:
    """``build(backend)``'s prediction, built at the call (so that a backend this machine cannot
    build fails there, as a candidate that could not run)."""
    return lambda inputs: build(backend)(inputs)


def _has_head(hf_model: torch.nn.Module) -> bool:
    """Whether the model is an encoder with a head (its streams are logits), not a bare one."""
    return getattr(hf_model, "base_model", hf_model) is not hf_model
