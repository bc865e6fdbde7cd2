"""A memory-bounded cache of a frozen encoder's outputs, so later epochs skip the encoder."""

import hashlib
import threading
from collections import OrderedDict

import numpy as np
from spacy.attrs import IDX, LENGTH, SENT_START
from spacy.tokens import Doc

from ..stitch import DocTransformerOutput


class OutputCache:
    """Least-recently-used outputs, keyed by model identity, doc text and tokenization; at most
    ``max_mb`` megabytes of arrays. Threads may share it."""

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[bytes, tuple[DocTransformerOutput, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type, tuple[float]]:
        # A copy in another process (n_process, Ray) starts empty: the outputs stay here.
        return OutputCache, (self.max_bytes / 2**20,)

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def key(model_key: str, doc: Doc) -> bytes:
        # Token boundaries and sentence starts decide alignment and spans, so they are part of it.
        h = hashlib.blake2b(model_key.encode(), digest_size=20)
        h.update(doc.text.encode("utf8"))
        h.update(np.ascontiguousarray(doc.to_array([IDX, LENGTH, SENT_START])).tobytes())
        return h.digest()

    def get(self, key: bytes) -> DocTransformerOutput | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: bytes, output: DocTransformerOutput) -> DocTransformerOutput:
        """Keep a copy of ``output`` that owns its arrays and return it (``output`` itself
        where it is too large or already kept). The encoder's outputs are rows of a whole
        batch's arrays: caching those views would keep every batch they came from alive, far
        beyond ``max_mb``."""
        size = sum(int(a.nbytes) for a in output.arrays())
        if size > self.max_bytes:
            return output
        output = output.map_arrays(lambda a: a.copy())
        with self._lock:
            if key in self._items:
                return output
            self._items[key] = (output, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, old) = self._items.popitem(last=False)
                self.nbytes -= old
        return output

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0
