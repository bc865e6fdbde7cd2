"""``pipe`` of spacy-trf's components: batches of docs, where a batch that fails is run again
doc by doc, so that spaCy's error handler (``nlp.set_error_handler``) gets only the docs that
fail and the other docs of the batch come out annotated."""

from collections.abc import Iterable, Iterator

from spacy import util
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc


def pipe_batches(component: TrainablePipe, stream: Iterable[Doc], batch_size: int) -> Iterator[Doc]:
    """Annotate ``stream`` in batches of ``batch_size`` docs, in order; a doc that fails on its
    own goes to the error handler (spaCy's default handler raises) and is not yielded."""
    error_handler = component.get_error_handler()
    for docs in util.minibatch(stream, size=batch_size):
        try:
            component.set_annotations(docs, component.predict(docs))
        except Exception as err:
            if error_handler is util.raise_error or len(docs) == 1:
                error_handler(component.name, component, docs, err)
                continue
            yield from _one_by_one(component, docs)
        else:
            yield from docs


def _one_by_one(component: TrainablePipe, docs: list[Doc]) -> Iterator[Doc]:
    error_handler = component.get_error_handler()
    for doc in docs:
        try:
            component.set_annotations([doc], component.predict([doc]))
        except Exception as err:
            error_handler(component.name, component, [doc], err)
        else:
            yield doc
