"""nlp.replace_listeners support: a listening component gets its own copy of the encoder."""

import copy
import weakref
from typing import Any

from thinc.api import Model

from ..encoder import COMPONENT_OPTIONS, EncoderOptions, HFShim, configure_encoder
from ..models import EncoderListener

REPLACE_KEYS = ("replace_listener", "replace_listener_cfg")


def replace_listener(model: Model, listener: EncoderListener, component: Any) -> Model:
    """The listener's component gets ``model``, a copy of the encoder."""
    if listener.needs_hidden_states:
        configure_encoder(model, output_hidden_states=True)
    for key in REPLACE_KEYS:
        model.attrs.pop(key, None)
    return model


class ListenerConfig:
    """``replace_listener_cfg``: the config of the component's own encoder, in the listener's
    place, with the trf encoder's current options.

    It refers to the encoder's shim weakly, so that copies of the model (Thinc deep-copies attrs)
    stay cheap; a copy keeps the options the encoder had when it was copied, for when the
    original is gone.
    """

    def __init__(self, shim: HFShim) -> None:
        self.shim = weakref.ref(shim)
        self.options = shim.options

    def __deepcopy__(self, memo: dict[int, Any]) -> "ListenerConfig":
        new = copy.copy(self)
        new.options = self.current_options()
        return new

    def current_options(self) -> EncoderOptions:
        shim = self.shim()
        return shim.options if shim is not None else self.options

    def __call__(self, trf_model_cfg: dict[str, Any], listener_cfg: dict[str, Any]) -> dict:
        """``listener_cfg`` is the component's ``model.tok2vec`` block, as spaCy passes it."""
        if listener_cfg.get("@architectures") == "spacy-trf.HybridTok2Vec.v1":
            listener_cfg = listener_cfg["transformer"]
        if listener_cfg.get("@architectures") != "spacy-trf.TransformerListener.v1":
            return dict(trf_model_cfg)  # a raw-output listener: the encoder itself
        cfg = {k: v for k, v in trf_model_cfg.items() if not k.startswith("output_")}
        cfg["@architectures"] = "spacy-trf.Tok2VecTransformer.v2"
        for key in ("pooling", "grad_factor", "layers"):
            if key in listener_cfg:
                cfg[key] = listener_cfg[key]
        # An owned encoder keeps the trf component's options.
        options = self.current_options()
        cfg.update({key: getattr(options, key) for key in COMPONENT_OPTIONS})
        return cfg
