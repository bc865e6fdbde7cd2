"""Inference backends: how the encoder runs at prediction time (training always uses PyTorch).

- ``"torch"``: the PyTorch model as loaded (on CUDA with ``mixed_precision``: autocast).
- ``"bf16"``: PyTorch under bf16 autocast, on a CPU that supports it or a GPU.
- ``"int8"``: a copy of the model whose Linear layers use dynamic int8 quantization with
  per-channel weight scales (CPU; see ``int8_layers`` for which layers).
- ``"compile"``: a copy of the model compiled by ``torch.compile`` (inductor): the same fp32
  computation with fused kernels (outputs within about 1e-5 of "torch").
- ``"auto"``: "int8" on CPU, "torch" on GPU: the fastest option that kept accuracy in our
  benchmarks (init-config writes it).
- ``"onnx"``: ONNX Runtime on the model exported to ONNX, saved as ``model.onnx`` beside the
  weights (``spacy-trf export-onnx``), so a loaded pipeline needs no export.

Converted models (int8, compile, onnx) are built from the current weights and rebuilt after the
weights change (``HFShim.weights_version``), so evaluation during training sees the trained
weights.
"""

import contextlib
import copy
import io
import logging
import sysconfig
import tempfile
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

if TYPE_CHECKING:
    from .hf import HFShim

INFERENCE_BACKENDS = ("torch", "bf16", "int8", "compile", "onnx", "auto")
ONNX_FILE = "model.onnx"
ONNX_INSTALL = "pip install 'spacy-trf[onnx]' (onnxruntime; export also needs onnx, onnxscript)"

# inputs -> (hidden streams: every layer or only the last, attentions or None)
Predict = Callable[[dict[str, torch.Tensor]], tuple[list[torch.Tensor], Any]]


def check_backend(name: Any) -> str:
    """Return a valid backend name or raise naming the choices."""
    if name not in INFERENCE_BACKENDS:
        raise ValueError(
            f"inference must be one of {', '.join(map(repr, INFERENCE_BACKENDS))}; got {name!r}."
        )
    return str(name)


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend that ``"auto"`` stands for on a device; other names unchanged."""
    if name != "auto":
        return name
    return "int8" if device.type == "cpu" else "torch"


def check_attentions(backend: str, output_attentions: bool) -> None:
    """Raise if the backend cannot return attention weights but they are asked for."""
    if backend == "onnx" and output_attentions:
        raise ValueError(
            'output_attentions is not available with inference = "onnx": use "torch", "bf16" '
            'or "int8".'
        )


@dataclass
class OnnxModel:
    """An exported encoder: outputs ``last_hidden_state`` and ``hidden_state_0..N``. A saved
    one is read from ``path`` when first needed."""

    data: bytes | None
    version: int  # HFShim.weights_version it was exported from
    path: Path | None = None
    session: Any = None

    def read(self) -> bytes | None:
        if self.data is None and self.path is not None and self.path.is_file():
            self.data = self.path.read_bytes()
        return self.data


def make_predictor(
    shim: "HFShim",
    flags: dict[str, bool],
    autocast: AbstractContextManager,
) -> Predict:
    """A prediction function for the shim's backend; ``flags`` are the HF forward's flags."""
    backend = resolve_backend(shim.inference, shim.device)
    want_hidden = bool(flags.get("output_hidden_states"))
    if backend == "onnx":
        check_attentions(backend, bool(flags.get("output_attentions")))
        return _onnx_predictor(shim, want_hidden)
    device = shim.device
    hf_model = shim._model
    if backend == "bf16":
        if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            raise ValueError(
                'inference = "bf16" needs a CPU with bf16 support (AVX-512 or AMX); this one '
                'has none. Use "int8" or "onnx" for faster CPU inference.'
            )
        if device.type == "cpu" and not native_bf16():
            warnings.warn(
                'inference = "bf16": this CPU has no native bf16 instructions (AVX512-BF16 or '
                "AMX), so bf16 is emulated and may be slower than fp32; int8 is faster here.",
                stacklevel=2,
            )
        autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    elif backend == "int8":
        hf_model = int8_model(shim)
    elif backend == "compile":
        hf_model = compiled_model(shim)

    def predict(inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
        with torch.inference_mode(), autocast:
            out = hf_model(**inputs, **flags)
        streams = list(out.hidden_states) if want_hidden else [out.last_hidden_state]
        return streams, getattr(out, "attentions", None)

    return predict


def native_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (AVX512-BF16 or AMX)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def int8_model(shim: "HFShim") -> torch.nn.Module:
    """The shim's model with dynamically quantized int8 Linear layers (cached per weights)."""
    if shim.device.type != "cpu":
        raise ValueError(
            'inference = "int8" (dynamic quantization) runs on CPU only; on a GPU use "bf16".'
        )

    def quantize(model: torch.nn.Module) -> torch.nn.Module:
        with warnings.catch_warnings():
            # torch.ao's dynamic quantization is deprecated in favour of torchao, but still the
            # fastest int8 path on CPU in the pinned torch.
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(
                model,
                dict.fromkeys(
                    int8_layers(model), torch.ao.quantization.per_channel_dynamic_qconfig
                ),
                mapping={torch.nn.Linear: Int8Linear},
            )

    return converted_model(shim, "int8", quantize)


def compiled_model(shim: "HFShim") -> torch.nn.Module:
    """An eval-mode copy of the shim's model compiled by ``torch.compile`` (inductor, dynamic
    shapes; cached per weights). Compilation happens at the first calls, in every process: once
    for batches of one window and once for larger ones, each taking seconds to a minute. After a
    weights change the new copy reuses the compiled graphs (weights are graph inputs)."""

    def compile_dynamic(model: torch.nn.Module) -> torch.nn.Module:
        if shim.device.type == "cpu":  # checked when building a copy, not at every call
            check_cpp_toolchain()
        return cast(torch.nn.Module, torch.compile(model, dynamic=True))

    return converted_model(shim, "compile", compile_dynamic)


def check_cpp_toolchain() -> None:
    """Raise if inductor cannot build its CPU kernels: they need a C++ compiler and Python's
    headers (they are built as Python extensions)."""
    fix = (
        "install them (e.g. `apt install g++ python3-dev`; CXX picks another compiler), or use "
        'inference = "torch" or "int8".'
    )
    try:
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # private API moved: let torch.compile report what is missing
        return
    try:
        get_cpp_compiler()
    except exc.InvalidCxxCompiler as err:
        raise ValueError(
            f'inference = "compile" needs a C++ compiler and Python headers on CPU: {fix}'
        ) from err
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        raise ValueError(
            f'inference = "compile" needs Python headers (Python.h) on CPU as well: {fix}'
        )


def converted_model(
    shim: "HFShim", backend: str, convert: Callable[[torch.nn.Module], torch.nn.Module]
) -> torch.nn.Module:
    """``convert`` applied to an eval-mode copy of the shim's model, cached until the weights
    or the backend change."""
    cached = shim.converted
    if cached is not None and cached[:2] == (backend, shim.weights_version):
        return cached[2]
    shim.converted = None  # free the previous one before building the next
    model = convert(copy.deepcopy(shim._model).eval())
    shim.converted = (backend, shim.weights_version, model)
    return model


def int8_layers(model: torch.nn.Module) -> list[str]:
    """The Linear layers that int8 quantizes: all of them where activations get 8 bits
    (``full_range_int8``); elsewhere not the feed-forward output projections (wider input than
    output), whose GELU inputs' outliers 7 bits quantize badly.

    MiniLM, CoNLL-2003 NER F1 / EWT XPOS / LAS against fp32's 92.44 / 95.46 / 85.07
    (benchmarks/speed/inference_options.py): every Linear, 8 bits: 92.23 / 95.43 / 84.81;
    7 bits: 91.95 / 95.33 / 84.36; 7 bits, feed-forward outputs in fp32: 92.40 / 95.35 / 84.72.
    """
    every = full_range_int8()
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (every or module.in_features <= module.out_features)
    ]


def full_range_int8() -> bool:
    """Whether int8 activations may use all 8 bits: fbgemm's AVX512-VNNI kernels sum u8 x s8
    products in int32; its AVX2 kernels pair them in int16, which 8-bit activations can overflow
    (hence torch's 7-bit default)."""
    return torch.backends.quantized.engine in ("x86", "fbgemm") and bool(
        torch.cpu.get_capabilities().get("avx512_vnni", False)
    )


class Int8Linear(torch.ao.nn.quantized.dynamic.Linear):
    """torch's dynamic int8 Linear, with 8-bit rather than 7-bit activations where the CPU
    allows it (``full_range_int8``): on MiniLM that took the mean cosine between int8 and fp32
    hidden states from 0.960 to 0.989 with every Linear in int8."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.full_range = full_range_int8()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.full_range or self._packed_params.dtype != torch.qint8:
            return super().forward(x)
        packed = self._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)


def export_onnx(shim: "HFShim") -> OnnxModel:
    """Export the shim's model to ONNX with every layer's hidden state as an output."""
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise ImportError(f"Exporting to ONNX needs onnx and onnxscript: {ONNX_INSTALL}") from err
    model = _Streams(shim._model).eval()
    input_names = shim.input_names
    device = shim.device
    example = tuple(
        torch.ones((2, 8), dtype=torch.long, device=device)
        if name == "attention_mask"
        else torch.zeros((2, 8), dtype=torch.long, device=device)
        for name in input_names
    )
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    n_layers = shim._model.config.num_hidden_layers
    output_names = ["last_hidden_state"] + [f"hidden_state_{i}" for i in range(n_layers + 1)]
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # progress lines, missing torchvision ops
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            tempfile.TemporaryDirectory() as tmp,
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                example,
                input_names=list(input_names),
                output_names=output_names,
                dynamic_shapes=tuple({0: batch, 1: seq} for _ in input_names),
                dynamo=True,
                verbose=False,
            )
            if program is None:
                raise RuntimeError("torch.onnx.export returned no program.")
            path = Path(tmp) / ONNX_FILE
            program.save(str(path))
            if len(list(Path(tmp).iterdir())) > 1:
                raise ValueError(
                    "The model is too large for a single-file ONNX export (over 2 GB); use "
                    'inference = "bf16" or "int8" instead.'
                )
            data = path.read_bytes()
    finally:
        exporter_log.setLevel(level)
    return OnnxModel(data, shim.weights_version)


def onnx_model(shim: "HFShim") -> OnnxModel:
    """The shim's ONNX model: the loaded one while the weights are unchanged, else a new export."""
    current = shim.onnx
    if current is None or current.version != shim.weights_version or current.read() is None:
        current = shim.onnx = export_onnx(shim)
    return current


def _onnx_predictor(shim: "HFShim", want_hidden: bool) -> Predict:
    device = shim.device
    n_layers = shim._model.config.num_hidden_layers
    outputs = (
        [f"hidden_state_{i}" for i in range(n_layers + 1)] if want_hidden else ["last_hidden_state"]
    )

    def predict(inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
        session = onnx_session(onnx_model(shim), device)  # exported or opened once, at need
        feed = {name: t.cpu().numpy() for name, t in inputs.items()}
        result = session.run(outputs, feed)
        return [torch.from_numpy(r).to(device) for r in result], None

    return predict


def onnx_session(model: OnnxModel, device: torch.device) -> Any:
    """An ONNX Runtime session on the model, using as many threads as torch."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError(f'inference = "onnx" needs ONNX Runtime: {ONNX_INSTALL}') from err
    if model.session is None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        model.session = ort.InferenceSession(model.read(), options, providers=providers)
    return model.session


class _Streams(torch.nn.Module):
    """The HF model as a function of its input tensors, returning plain tensors."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.model(**inputs, output_hidden_states=True, return_dict=True)
        return (out.last_hidden_state, *out.hidden_states)
