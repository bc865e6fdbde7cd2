"""``pipe`` of spacy-trf's components: batches of docs, where a batch that fails is run again
doc by doc, so that spaCy's error handler (``nlp.set_error_handler``) gets only the docs that
fail and the other docs of the batch come out annotated. (spaCy's own trainable components give
the handler the whole batch and yield none of it.)"""

import logging
from collections.abc import Iterable, Iterator

from spacy import util
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc

logger = logging.getLogger("spacy_trf")


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
            logger.warning(
                "'%s' failed on a batch of %d docs (%r); running them one by one",
                component.name, len(docs), err,
            )  # fmt: skip
            yield from pipe_batches(component, docs, 1)
        else:
            yield from docs
