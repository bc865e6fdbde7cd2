"""Doc -> pieces: run each span's text through the model's own fast tokenizer, once, with offsets.

Special tokens are not added here: windows get them later, from a template read off the tokenizer.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
from spacy.tokens import Doc, Span
from tokenizers import Tokenizer

from ..align import Aligner, TokenBounds, align_doc, token_bounds, word_bounds


@dataclass
class SpecialTemplate:
    """The special tokens the tokenizer wraps a single sequence with, and their type ids."""

    prefix_ids: np.ndarray
    suffix_ids: np.ndarray
    prefix_type_ids: np.ndarray
    suffix_type_ids: np.ndarray
    content_type_id: int

    @property
    def n_special(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)


@dataclass
class DocPieces:
    """The pieces of one doc, span after span, with offsets in the doc's characters."""

    ids: np.ndarray  # (n_pieces,) int64
    offsets: np.ndarray  # (n_pieces, 2) int64, as the tokenizer gives them
    span_lengths: np.ndarray  # (n_spans,) pieces per span; windows never cross spans
    align: Any  # thinc Ragged: one entry per token, row indices into the pieces


class PieceTokenizer:
    """Wraps a Hugging Face fast tokenizer for piece encoding and window templates."""

    def __init__(self, hf_tokenizer: Any) -> None:
        if not getattr(hf_tokenizer, "is_fast", False) or not hasattr(
            hf_tokenizer, "backend_tokenizer"
        ):
            raise ValueError(
                f"{type(hf_tokenizer).__name__} is not a fast tokenizer and gives no character "
                "offsets; spacy-trf needs the model's tokenizer.json (a fast tokenizer)."
            )
        self.hf_tokenizer = hf_tokenizer
        # A private copy without the truncation/padding that many tokenizer.json files carry.
        self.backend: Tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.template = self._read_template()
        self.cls_index = self._find_cls()
        self.unk_id: int | None = hf_tokenizer.unk_token_id
        pad = hf_tokenizer.pad_token_id
        self.pad_id: int = int(pad) if pad is not None else 0
        self.uses_type_ids = "token_type_ids" in getattr(hf_tokenizer, "model_input_names", [])
        vocab = self.backend.get_vocab(with_added_tokens=True)
        self.vocab = np.empty(max(vocab.values(), default=-1) + 1, dtype=object)
        self.vocab[list(vocab.values())] = list(vocab.keys())

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model inputs a batch of these pieces provides, in a fixed order."""
        names = ("input_ids", "attention_mask")
        return (*names, "token_type_ids") if self.uses_type_ids else names

    def _read_template(self) -> SpecialTemplate:
        enc = self.backend.encode("hello world", add_special_tokens=True)
        ids = np.asarray(enc.ids, dtype=np.int64)
        special = np.asarray(enc.special_tokens_mask, dtype=bool)
        types = np.asarray(enc.type_ids, dtype=np.int64)
        content = np.flatnonzero(~special)
        if len(content) == 0 or content[-1] - content[0] + 1 != len(content):
            raise ValueError("Cannot read the special-token template of this tokenizer.")
        first, last = content[0], content[-1] + 1
        return SpecialTemplate(
            prefix_ids=ids[:first],
            suffix_ids=ids[last:],
            prefix_type_ids=types[:first],
            suffix_type_ids=types[last:],
            content_type_id=int(types[first]),
        )

    def _find_cls(self) -> int:
        """Position of the class token among a window's special rows (prefix then suffix)."""
        specials = np.concatenate([self.template.prefix_ids, self.template.suffix_ids]).tolist()
        for name in ("cls_token_id", "bos_token_id"):
            token = getattr(self.hf_tokenizer, name, None)
            if token is not None and token in specials:
                return int(specials.index(token))
        return 0

    def encode_texts(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Piece ids and (start, end) character offsets of each text, without special tokens."""
        if not texts:
            return []
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        out = []
        for enc in encodings:
            ids = np.asarray(enc.ids, dtype=np.int64)
            offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            out.append((ids, offsets))
        return out

    def encode_docs(
        self, docs: list[Doc], spans: list[list[Span]], aligner: Aligner = align_doc
    ) -> list[DocPieces]:
        """Tokenize all spans of all docs in one batched call and align pieces to tokens."""
        doc_texts = [doc.text for doc in docs]  # Doc.text is rebuilt on every access
        texts = [
            text[span.start_char : span.end_char]
            for text, doc_spans in zip(doc_texts, spans, strict=True)
            for span in doc_spans
        ]
        encoded = iter(self.encode_texts(texts))
        result = []
        for doc, text, doc_spans in zip(docs, doc_texts, spans, strict=True):
            span_pieces = []
            for span in doc_spans:
                ids, offsets = next(encoded)
                span_pieces.append((ids, offsets + span.start_char))
            span_starts = np.asarray([s.start for s in doc_spans], dtype=np.int64)
            span_ends = np.asarray([s.end for s in doc_spans], dtype=np.int64)
            bounds = token_bounds(doc, text)
            result.append(self._aligned(bounds, span_starts, span_ends, span_pieces, aligner))
        return result

    def encode_words(self, sequences: list[list[str]]) -> list[DocPieces]:
        """Tokenize pre-split words, one batched call, and align pieces to words.

        Each sequence's words are joined with single spaces and aligned by character offsets,
        so every tokenizer family sees text as in pretraining (byte-level BPE gets its "Ġ"
        word starts) and a word the tokenizer splits further keeps all its pieces.
        """
        joined = [word_bounds(words) for words in sequences]
        encoded = self.encode_texts([text for text, _ in joined])
        return [
            self._aligned(
                bounds, np.zeros(1, np.int64), np.full(1, len(bounds.starts)), [(ids, offsets)]
            )
            for (_, bounds), (ids, offsets) in zip(joined, encoded, strict=True)
        ]

    def _aligned(
        self,
        bounds: TokenBounds,
        span_starts: np.ndarray,
        span_ends: np.ndarray,
        span_pieces: list[tuple[np.ndarray, np.ndarray]],
        aligner: Aligner = align_doc,
    ) -> DocPieces:
        """DocPieces from each span's pieces (offsets in the text of ``bounds``)."""
        pieces = _concat(span_pieces)
        align, missing = aligner(pieces[1], bounds)
        if len(missing):
            # Tokens outside every span (a getter may skip some) are not the tokenizer's doing.
            inside = (
                (span_starts[None, :] <= missing[:, None]) & (missing[:, None] < span_ends)
            ).any(1)
            missing = missing[inside]
        if len(missing) and self.unk_id is not None:
            # The tokenizer dropped every character of these tokens (e.g. control characters
            # removed by a normalizer): give each an unknown-token piece so no word is invisible.
            span_pieces = self._insert_unknown(span_pieces, span_starts, span_ends, bounds, missing)
            pieces = _concat(span_pieces)
            align, _ = aligner(pieces[1], bounds)
        return DocPieces(
            ids=pieces[0],
            offsets=pieces[1],
            span_lengths=np.asarray([len(ids) for ids, _ in span_pieces], dtype=np.int64),
            align=align,
        )

    def _insert_unknown(
        self,
        span_pieces: list[tuple[np.ndarray, np.ndarray]],
        span_starts: np.ndarray,
        span_ends: np.ndarray,
        bounds: TokenBounds,
        missing: np.ndarray,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        assert self.unk_id is not None
        starts, ends = bounds.starts, bounds.ends
        span_pieces = list(span_pieces)
        for tok in missing.tolist():  # rare path: one entry per invisible token
            i = int(np.flatnonzero((span_starts <= tok) & (tok < span_ends))[0])
            ids, offsets = span_pieces[i]
            at = int(np.searchsorted(offsets[:, 0], starts[tok], side="left"))
            ids = np.insert(ids, at, self.unk_id)
            offsets = np.insert(offsets, at, [starts[tok], ends[tok]], axis=0)
            span_pieces[i] = (ids, offsets)
        return span_pieces


def _concat(span_pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not span_pieces:
        return np.zeros((0,), dtype=np.int64), np.zeros((0, 2), dtype=np.int64)
    if len(span_pieces) == 1:
        return span_pieces[0]
    ids = np.concatenate([p[0] for p in span_pieces])
    offsets = np.concatenate([p[1] for p in span_pieces]).reshape(-1, 2)
    return ids, offsets
