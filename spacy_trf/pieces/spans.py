"""Span getters: which stretches of each Doc the encoder reads as one sequence.

A span getter maps ``List[Doc]`` to one ``List[Span]`` per doc. Spans longer than the model's window
are cut into strided windows later, so a span getter never needs to worry about length.
"""

from collections.abc import Callable

from spacy.tokens import Doc, Span

from ..registry import span_getters

SpanGetter = Callable[[list[Doc]], list[list[Span]]]


@span_getters("spacy-trf.doc_spans.v1")
def configure_doc_spans() -> SpanGetter:
    """Read each doc whole (cut into windows as needed)."""

    def get_doc_spans(docs: list[Doc]) -> list[list[Span]]:
        return [[doc[:]] if len(doc) else [] for doc in docs]

    return get_doc_spans


@span_getters("spacy-trf.sent_spans.v1")
def configure_sent_spans() -> SpanGetter:
    """Read each sentence as its own sequence; needs sentence boundaries from an earlier
    component (senter, parser, sentencizer)."""

    def get_sent_spans(docs: list[Doc]) -> list[list[Span]]:
        spans = []
        for doc in docs:
            if len(doc) and not doc.has_annotation("SENT_START"):
                raise ValueError(
                    "spacy-trf.sent_spans.v1 needs sentence boundaries, but a doc has none. Add a "
                    "'sentencizer', 'senter' or 'parser' before 'trf' in the pipeline, or use "
                    "spacy-trf.doc_spans.v1."
                )
            spans.append(list(doc.sents))
        return spans

    return get_sent_spans
