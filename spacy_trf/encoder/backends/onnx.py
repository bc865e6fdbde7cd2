"""``inference = "onnx"``: ONNX Runtime on the model exported to ONNX, saved as ``model.onnx``
beside the weights (``spacy-trf export-onnx``), so a loaded pipeline needs no export."""

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ONNX_FILE = "model.onnx"
ONNX_INSTALL = "pip install 'spacy-trf[onnx]' (onnxruntime; export also needs onnx, onnxscript)"


@dataclass
class OnnxModel:
    """An exported encoder: outputs ``last_hidden_state`` and ``hidden_state_0..N``. A saved
    one is read from ``path`` when first needed."""

    data: bytes | None
    version: int  # weights version it was exported from
    path: Path | None = None
    session: Any = None

    def read(self) -> bytes | None:
        if self.data is None and self.path is not None and self.path.is_file():
            self.data = self.path.read_bytes()
        return self.data


def output_names(n_layers: int, all_layers: bool) -> list[str]:
    """The exported model's outputs to fetch: every hidden state, or the last one."""
    return (
        [f"hidden_state_{i}" for i in range(n_layers + 1)] if all_layers else ["last_hidden_state"]
    )


def export_onnx(hf_model: Any, input_names: tuple[str, ...]) -> bytes:
    """The model exported to ONNX, with every layer's hidden state as an output."""
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise ImportError(f"Exporting to ONNX needs onnx and onnxscript: {ONNX_INSTALL}") from err
    model = _Streams(hf_model).eval()
    device = next(hf_model.parameters()).device
    example = tuple(
        torch.ones((2, 8), dtype=torch.long, device=device)
        if name == "attention_mask"
        else torch.zeros((2, 8), dtype=torch.long, device=device)
        for name in input_names
    )
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    n_layers = hf_model.config.num_hidden_layers
    names = ["last_hidden_state", *output_names(n_layers, True)]
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
                output_names=names,
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
    return data


def onnx_session(model: "OnnxModel", device: torch.device) -> Any:
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
