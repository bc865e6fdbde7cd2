"""Encoder models and their options: find an encoder's shim, read and change its options."""

from dataclasses import asdict
from typing import Any

from thinc.api import Model

from .options import OPTION_NAMES, EncoderOptions
from .shim import HFShim


def get_shim(model: Model) -> HFShim:
    """The HFShim of an encoder model (raises for any other model)."""
    for shim in model.shims:
        if isinstance(shim, HFShim):
            return shim
    raise ValueError(f"'{model.name}' is not a spacy-trf encoder (it has no HFShim).")


def is_encoder(model: Model) -> bool:
    return any(isinstance(shim, HFShim) for shim in model.shims)


def encoder_options(model: Model) -> EncoderOptions:
    """The options of an encoder model."""
    return get_shim(model).options


def configure_encoder(model: Model, **changes: Any) -> EncoderOptions:
    """Change options of an encoder model (validated) and return them all."""
    unknown = sorted(set(changes) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"Unknown encoder options {unknown}; known: {', '.join(OPTION_NAMES)}.")
    shim = get_shim(model)
    shim.set_options(EncoderOptions(**{**asdict(shim.options), **changes}))
    return shim.options
