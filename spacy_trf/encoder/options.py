"""``EncoderOptions``: how an encoder runs, read from and written to its model's attrs by
one pair of functions, so that components and architectures set them the same way."""

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from thinc.api import Model

from .. import defaults
from .shim import HFShim


@dataclass(frozen=True)
class EncoderOptions:
    """Run-time settings of an encoder.

    max_batch_pieces: Most padded pieces (rows x longest window) per forward call.
    mixed_precision: On GPU, autocast (bf16 where supported, else fp16 with loss scaling).
    gradient_checkpointing: On GPU, recompute activations in backward to save memory.
    output_hidden_states: Return every layer's hidden states, not only the last.
    output_attentions: Return attention weights, per window.
    learn_rate_scale: Multiplies the optimizer's learning rate for the encoder's weights.
    """

    max_batch_pieces: int = defaults.MAX_BATCH_PIECES
    mixed_precision: bool = False
    gradient_checkpointing: bool = False
    output_hidden_states: bool = False
    output_attentions: bool = False
    learn_rate_scale: float = 1.0

    def __post_init__(self) -> None:
        size = self.max_batch_pieces
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"max_batch_pieces must be a positive integer, got {size!r}.")
        scale = self.learn_rate_scale
        if not isinstance(scale, int | float) or isinstance(scale, bool) or scale < 0:
            raise ValueError(f"learn_rate_scale must be a number >= 0, got {scale!r}.")


OPTION_NAMES = tuple(f.name for f in fields(EncoderOptions))


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
    return EncoderOptions(**{k: model.attrs[k] for k in OPTION_NAMES if k in model.attrs})


def configure_encoder(model: Model, **changes: Any) -> EncoderOptions:
    """Change options of an encoder model (validated) and return them all."""
    unknown = sorted(set(changes) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"Unknown encoder options {unknown}; known: {', '.join(OPTION_NAMES)}.")
    options = EncoderOptions(**{**asdict(encoder_options(model)), **changes})
    model.attrs.update(asdict(options))
    shim = get_shim(model)
    shim.learn_rate_scale = float(options.learn_rate_scale)
    if shim.loaded:
        settle(shim, options)
    return options


def settle(shim: HFShim, options: EncoderOptions) -> None:
    """Set the HF model's switches that the options need, before it runs (not during a forward):
    eager attention when attentions are asked for (fused kernels return none), and on CUDA
    gradient checkpointing and fp16 loss scaling. Idempotent."""
    hf_model: Any = shim.hf_model
    if options.output_attentions and getattr(hf_model.config, "_attn_implementation", "eager") != (
        "eager"
    ):
        hf_model.set_attn_implementation("eager")
    if shim.device.type != "cuda":
        return
    if options.gradient_checkpointing and hf_model.supports_gradient_checkpointing:
        if not hf_model.is_gradient_checkpointing:
            hf_model.gradient_checkpointing_enable({"use_reentrant": False})
    if options.mixed_precision and not torch.cuda.is_bf16_supported():
        shim.enable_loss_scaling()
