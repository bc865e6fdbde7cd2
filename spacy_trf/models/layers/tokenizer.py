"""Pre-split words -> ``PieceBatch``: pieces, windows and padded inputs for the encoder."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from thinc.api import Model, Shim, registry
from thinc.types import Ragged

from ... import defaults
from ...encoder.loading import bytes_to_dir, dir_to_bytes, load_tokenizer, resolve_name
from ...pieces import PieceTokenizer
from ...windows import WindowBatch, WindowPlan, plan_windows
from ..transformer import check_window_setting


@dataclass
class PieceBatch:
    """Word sequences as encoder input: their pieces and windows.

    ``word_pieces`` holds, per sequence, one entry per word with the indices of the word's
    pieces (special tokens excluded); ``plan`` says where each sequence's pieces and windows
    sit, so the encoder can batch the windows and stitch them back into one row per piece.
    """

    plan: WindowPlan
    pieces: PieceTokenizer

    @property
    def n_special(self) -> int:
        """Special tokens per window."""
        return self.pieces.template.n_special

    @property
    def cls_index(self) -> int:
        """Which special row of a window is the class token."""
        return self.pieces.cls_index

    @cached_property
    def windows(self) -> WindowBatch:
        """Every window in one padded batch, in order (for inspection; the encoder builds its
        own length-sorted batches)."""
        return self.plan.batch(
            np.arange(self.plan.n_windows), self.pieces.template, self.pieces.pad_id
        )

    @property
    def input_ids(self) -> np.ndarray:
        return self.windows.input_ids

    @property
    def attention_mask(self) -> np.ndarray:
        return self.windows.attention_mask

    @property
    def token_type_ids(self) -> np.ndarray:
        return self.windows.token_type_ids

    @property
    def word_pieces(self) -> list[Ragged]:
        return [p.align for p in self.plan.pieces]


# Stage contract: pre-split words -> pieces and windows.
WordsToPiecesModelT = Model[list[list[str]], PieceBatch]


class TokenizerShim(Shim):
    """Holds a fast tokenizer; serialized as its Hugging Face files, so saved models are
    self-contained."""

    def __init__(self, tokenizer_config: dict[str, Any]) -> None:
        super().__init__(None)
        self.tokenizer_config = dict(tokenizer_config)
        self.pieces: PieceTokenizer | None = None

    def load(self, name: str) -> "TokenizerShim":
        # A saved tokenizer directory has no config.json: only hub ids need resolving.
        source = name if Path(name).is_dir() else resolve_name(name)
        self.pieces = PieceTokenizer(load_tokenizer(source, self.tokenizer_config))
        return self

    def finish_update(self, optimizer: Any) -> None:
        """A tokenizer has no weights."""

    def to_device(self, device_type: str, device_id: int) -> None:
        """A tokenizer runs on the CPU."""

    @contextmanager
    def use_params(self, params: Any) -> Iterator[None]:
        yield

    def to_bytes(self) -> bytes:
        if self.pieces is None:
            raise ValueError("The tokenizer is not loaded: call model.initialize() first.")
        return dir_to_bytes(self.pieces.hf_tokenizer.save_pretrained)

    def from_bytes(self, bytes_data: bytes) -> "TokenizerShim":
        return bytes_to_dir(bytes_data, lambda path: self.load(str(path)))


@registry.layers("spacy-trf.TransformerTokenizer.v1")
def TransformerTokenizer(
    name: str,
    window: int | None = None,
    stride: int | None = None,
    tokenizer_config: dict[str, Any] = {},  # noqa: B006 (read only; configs pass dicts)
) -> WordsToPiecesModelT:
    """Tokenize pre-split words with the model's own fast tokenizer.

    Long sequences are cut into windows of ``window`` pieces (default: the tokenizer's limit
    minus its special tokens, or spacy-trf's default window if the tokenizer states none)
    starting every ``stride`` pieces (default: ``window``, no overlap); nothing is truncated.

    name (str): Hub id or local directory of the model (the tokenizer is loaded at initialize).
    window (int | None): Content pieces per window.
    stride (int | None): Pieces between window starts.
    tokenizer_config (dict): Keyword arguments for AutoTokenizer.from_pretrained.
    """
    for key, value in (("window", window), ("stride", stride)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{key} must be a positive number of pieces, got {value!r}.")
    if window is not None and stride is not None:
        check_window_setting(window, stride)
    return Model(
        "spacy-trf.TransformerTokenizer",
        _forward,
        init=_init,
        shims=[TokenizerShim(tokenizer_config)],
        attrs={"name": name, "window": window, "stride": stride},
    )


def _shim(model: Model) -> TokenizerShim:
    shim = model.shims[0]
    assert isinstance(shim, TokenizerShim)
    return shim


def _init(model: Model, X: Any = None, Y: Any = None) -> None:
    shim = _shim(model)
    if shim.pieces is None:
        shim.load(model.attrs["name"])


def window_size(model: Model) -> tuple[int, int]:
    """The layer's (window, stride), defaults filled in from the tokenizer."""
    pieces = _shim(model).pieces
    assert pieces is not None
    window = model.attrs["window"]
    if window is None:
        limit = getattr(pieces.hf_tokenizer, "model_max_length", None)
        if isinstance(limit, int) and limit <= 1_000_000:
            window = limit - pieces.template.n_special
        else:
            window = defaults.WINDOW
    stride = model.attrs["stride"] or window
    check_window_setting(window, stride)
    return window, stride


def _forward(
    model: Model, X: list[list[str]], is_train: bool
) -> tuple[PieceBatch, Callable[[Any], list]]:
    pieces = _shim(model).pieces
    if pieces is None:
        raise ValueError(
            f"The tokenizer of '{model.attrs['name']}' is not loaded: call model.initialize() "
            "(or model.from_disk) first."
        )
    if not all(isinstance(words, list | tuple) for words in X):
        raise ValueError("TransformerTokenizer takes a list of word lists (pre-split words).")
    window, stride = window_size(model)
    plan = plan_windows(pieces.encode_words([list(words) for words in X]), window, stride)
    return PieceBatch(plan, pieces), lambda d_batch: []
