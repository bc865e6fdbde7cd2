"""``EncoderOptions``: how an encoder runs. Each encoder's ``HFShim`` holds its options; they
are read with ``encoder_options(model)`` and changed with ``configure_encoder(model, ...)``
(configure.py), so components, architectures and the Thinc layers set them the same way."""

from dataclasses import dataclass, fields

from .. import defaults


@dataclass(frozen=True)
class EncoderOptions:
    """Run-time settings of an encoder.

    max_batch_pieces: Most padded pieces (rows x longest window) per forward call.
    mixed_precision: Autocast: on GPU bf16 where supported, else fp16 with loss scaling; on CPU
        bf16 where the CPU computes it natively (AMX, AVX512-BF16), else nothing.
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
# The options a trf component sets in its config, and an owned encoder (Tok2VecTransformer.v2)
# takes as arguments.
COMPONENT_OPTIONS = (
    "max_batch_pieces",
    "mixed_precision",
    "gradient_checkpointing",
    "learn_rate_scale",
)
