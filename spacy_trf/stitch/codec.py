"""``doc._.trf`` through msgpack, so that it survives Doc.to_bytes and DocBin(store_user_data).

spaCy does not serialize user hooks: after loading such docs, call
``spacy_trf.pipeline.vectors.install_vector_hooks(doc)`` to get the .vector/.similarity hooks back.
"""

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import srsly
from thinc.types import Ragged
from thinc.util import to_numpy

from .output import DocTransformerOutput

_MARKER = "__spacy_trf.DocTransformerOutput__"


def _encode_output(obj: Any, chain: Callable[[Any], Any] | None = None) -> Any:
    if not isinstance(obj, DocTransformerOutput):
        return obj if chain is None else chain(obj)
    host = obj.map_arrays(to_numpy)
    data = {f.name: getattr(host, f.name) for f in fields(host) if f.name not in ("align", "vocab")}
    data["align_data"] = host.align.dataXd
    data["align_lengths"] = host.align.lengths
    data["piece_texts"] = obj.piece_texts
    return {_MARKER: data}


def _decode_output(obj: Any, chain: Callable[[Any], Any] | None = None) -> Any:
    if not (isinstance(obj, dict) and _MARKER in obj):
        return obj if chain is None else chain(obj)
    data = dict(obj[_MARKER])
    align = Ragged(data.pop("align_data"), data.pop("align_lengths"))
    texts = data.pop("piece_texts")
    ids = np.asarray(data["piece_ids"], dtype=np.int64)
    vocab = np.empty(int(ids.max()) + 1 if len(ids) else 0, dtype=object)
    vocab[ids] = texts
    return DocTransformerOutput(align=align, vocab=vocab, **data)


srsly.msgpack_encoders.register("spacy_trf.output", func=_encode_output)
srsly.msgpack_decoders.register("spacy_trf.output", func=_decode_output)
