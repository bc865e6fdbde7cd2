"""Checks on a model before and after it loads: an encoder, the asked-for head, no pickles,
tokenizer files present, the weights its config.json describes. Each raises ModelLoadError
naming the file and the fix."""

import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

# Classification heads an encoder can come with: the head name -> the auto class and the ending of
# its architectures' class names (BertForTokenClassification, ...).
HEADS: dict[str, tuple[Any, str]] = {
    "token": (AutoModelForTokenClassification, "ForTokenClassification"),
    "sequence": (AutoModelForSequenceClassification, "ForSequenceClassification"),
}
# Files in pickle format: unpickling can run any code, so they are read only on request.
PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")
PICKLE_FILES = ("*.pkl", "*.pickle")
# A bare encoder's pooler, which masked-LM checkpoints leave untrained (BertModel.pooler).
BASE_POOLER = re.compile(r"^(\w+\.)?pooler\.")
# Decoder-style families that still read text bidirectionally and are fine as encoders.
BIDIRECTIONAL_CAUSAL_LM = {"xlnet"}


class ModelLoadError(OSError):
    """A Hugging Face model or tokenizer could not be loaded or is unsuitable."""


class RemoteCodeError(ModelLoadError):
    """The model needs code from its own files, and trust_remote_code is not set."""


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


def check_no_pickles(source: str, transformer_config: dict[str, Any]) -> None:
    """Refuse a model directory that would need unpickling (weights only in pytorch_model.bin or
    *.pt, or pickled files) unless the config opts in with ``use_safetensors = false``."""
    path = Path(source) / transformer_config.get("subfolder", "")
    if not path.is_dir() or transformer_config.get("use_safetensors") is False:
        return
    safetensors = any(path.glob("*.safetensors"))
    found = [p.name for pattern in PICKLE_FILES for p in path.glob(pattern)]
    if not safetensors:
        found += [p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern)]
    if found:
        raise ModelLoadError(
            f"'{source}' holds {', '.join(sorted(found))} in pickle format, and unpickling a file "
            "can run any code. Convert the model to safetensors (load it where you trust it and "
            "save_pretrained(DIR, safe_serialization=True)), or, if you trust this directory, set "
            "use_safetensors = false in the trf model's transformer_config."
        )


def check_tokenizer_files(source: str, tokenizer: Any, subfolder: str = "") -> None:
    """Raise if a model directory has none of its tokenizer's files (transformers then builds an
    empty tokenizer that maps every word to the unknown piece)."""
    path = Path(source) / subfolder
    if not path.is_dir():
        return
    names = {"tokenizer.json", *getattr(tokenizer, "vocab_files_names", {}).values()}
    if not any((path / str(fname)).is_file() for fname in names):
        others = ", ".join(sorted(str(n) for n in names - {"tokenizer.json"}))
        raise ModelLoadError(
            f"'{source}' has no tokenizer files (tokenizer.json is missing, and so are "
            f"{others}). Copy tokenizer.json from the original model into it, or save the "
            "pipeline again."
        )


def check_weights_found(
    model: torch.nn.Module, missing: Any, name: str, head: str | None = None
) -> None:
    """Raise if weights the config describes are not in the checkpoint (a bare encoder's
    untrained pooler aside): config.json then belongs to another model, and transformers would
    start those weights from random."""
    lost = sorted(k for k in set(missing) if head is not None or not BASE_POOLER.match(k))
    if lost:
        raise ModelLoadError(
            f"'{name}': {len(lost)} of the {len(model.state_dict())} weights that its "
            f"config.json describes ({type(model).__name__}) are not in its checkpoint (e.g. "
            f"{lost[0]}), so config.json belongs to another model. Put back the config.json "
            "saved with these weights."
        )


def weights_error(name: str, err: Exception) -> str:
    """What went wrong reading the weights of ``name``, and what to do."""
    if isinstance(err, SafetensorError):
        return (
            f"The weights of '{name}' (model.safetensors) are truncated or corrupt ({err}). "
            "Save the pipeline again, or download the model again."
        )
    if "use_safetensors" in str(err) or "with `safetensors`" in str(err):
        return (
            f"'{name}' has no safetensors weights, only weights in pickle format, and unpickling "
            "can run any code. Use a model with model.safetensors, or, if you trust it, set "
            f"use_safetensors = false in the trf model's transformer_config ({err})."
        )
    if "mismatched" in str(err) or "size mismatch" in str(err):
        return (
            f"The weights of '{name}' do not fit its config.json (the shapes differ: a "
            "config.json of another model or size?). Put back the config.json saved with these "
            "weights."
        )
    return f"Could not load the weights of '{name}': {err}"
