"""nlp.replace_listeners support: a listening component gets its own copy of the encoder."""

from typing import Any

from thinc.api import Model

from ..encoder import EncoderOptions, configure_encoder
from ..models import EncoderListener

REPLACE_KEYS = ("replace_listener", "replace_listener_cfg")
# The trf component's encoder options that Tok2VecTransformer.v2 takes.
OWNED_OPTIONS = (
    "max_batch_pieces",
    "mixed_precision",
    "gradient_checkpointing",
    "learn_rate_scale",
)


def replace_listener(model: Model, listener: EncoderListener, component: Any) -> Model:
    """The listener's component gets ``model``, a copy of the encoder."""
    if listener.needs_hidden_states:
        configure_encoder(model, output_hidden_states=True)
    for key in REPLACE_KEYS:
        model.attrs.pop(key, None)
    return model


def listener_config(
    trf_model_cfg: dict[str, Any], listener_cfg: dict[str, Any], options: EncoderOptions
) -> dict[str, Any]:
    """The config of the component's own encoder, in the listener's place.

    ``listener_cfg`` is the component's ``model.tok2vec`` block, as spaCy passes it; ``options``
    are the trf component's, which an owned token encoder (Tok2VecTransformer.v2) keeps.
    """
    if listener_cfg.get("@architectures") == "spacy-trf.HybridTok2Vec.v1":
        listener_cfg = listener_cfg["transformer"]
    if listener_cfg.get("@architectures") != "spacy-trf.TransformerListener.v1":
        return dict(trf_model_cfg)  # a raw-output listener: the encoder itself
    cfg = {k: v for k, v in trf_model_cfg.items() if not k.startswith("output_")}
    cfg["@architectures"] = "spacy-trf.Tok2VecTransformer.v2"
    for key in ("pooling", "grad_factor", "layers"):
        if key in listener_cfg:
            cfg[key] = listener_cfg[key]
    for key in (
        "max_batch_pieces",
        "mixed_precision",
        "gradient_checkpointing",
        "learn_rate_scale",
    ):
        cfg[key] = getattr(options, key)
    return cfg
