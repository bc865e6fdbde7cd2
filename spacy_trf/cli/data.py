"""Read training data for the quickstart with spaCy's converters: .spacy, CoNLL-U, IOB, JSONL."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import srsly
from spacy.tokens import Doc, DocBin
from spacy.training.converters import conll_ner_to_docs, conllu_to_docs, iob_to_docs
from spacy.vocab import Vocab

FORMATS = ".spacy, .conllu, .iob/.conll/.txt (IOB columns or word|tag|iob), .jsonl"


def read_docs(path: str | Path, vocab: Vocab) -> list[Doc]:
    """Annotated docs from a file in one of FORMATS."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No data file at {path}. Formats: {FORMATS}.")
    suffix = path.suffix.lower()
    if suffix == ".spacy":
        return list(DocBin().from_disk(path).get_docs(vocab))
    if suffix == ".jsonl":
        return list(_jsonl_docs(vocab, path))
    text = path.read_text(encoding="utf8")
    if not text.strip():
        raise ValueError(f"{path} is empty: it holds no sentences to train or evaluate on.")
    if suffix == ".conllu":
        _check_conllu(text, path)
        try:
            return list(conllu_to_docs(text, n_sents=10, no_print=True))
        except (ValueError, KeyError, IndexError) as err:
            raise ValueError(f"{path}: not valid CoNLL-U ({err!r}).") from err
    if suffix in (".iob", ".conll", ".txt"):
        first = next((line for line in text.splitlines() if line.strip()), "")
        if "|" in first.split()[0] if first.split() else False:
            return list(iob_to_docs(text, n_sents=10, no_print=True))
        return list(conll_ner_to_docs(text, n_sents=10, no_print=True))
    raise ValueError(f"Unsupported data file {path.name}: use one of {FORMATS}.")


def _check_conllu(text: str, path: Path) -> None:
    """Raise, naming the line, where a token line does not have CoNLL-U's 10 tab-separated
    columns."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.startswith("#") and line.count("\t") != 9:
            raise ValueError(
                f"{path}:{number}: a CoNLL-U token line needs 10 tab-separated columns (ID, FORM, "
                f"LEMMA, UPOS, XPOS, FEATS, HEAD, DEPREL, DEPS, MISC), found "
                f"{line.count(chr(9)) + 1}. Separate columns with tabs, use _ for empty ones, "
                "and keep one blank line between sentences."
            )


def _jsonl_docs(vocab: Vocab, path: Path) -> Iterator[Doc]:
    lines = 0
    with path.open(encoding="utf8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = srsly.json_loads(line)
            except ValueError as err:
                raise ValueError(f"{path}:{number}: not a JSON line ({err}).") from err
            if not isinstance(record, dict):
                raise ValueError(
                    f'{path}:{number}: each line must be an object with "words" or "text".'
                )
            lines += 1
            yield _json_doc(vocab, record, number, path)
    if not lines:
        raise ValueError(f"{path} is empty: it holds no documents to train or evaluate on.")


def _check_lengths(record: dict[str, Any], where: str) -> None:
    n_words = len(record["words"])
    for key in ("spaces", "tags", "pos", "entities"):
        values = record.get(key)
        if values is not None and (not isinstance(values, list) or len(values) != n_words):
            raise ValueError(
                f"{where}: {key} must be a list with one value per word ({n_words} words), "
                f"got {values!r:.60}; fix it or leave {key!r} out."
            )


def _json_doc(vocab: Vocab, record: dict[str, Any], number: int, path: Path) -> Doc:
    """A line is {"words", "spaces", "tags"?, "entities"? (IOB per word), "cats"?} or
    {"text", "entities"? ([start, end, label] character spans), "cats"?}."""
    cats = record.get("cats", {})
    if "words" in record:
        _check_lengths(record, f"{path}:{number}")
        try:
            doc = Doc(
                vocab,
                words=record["words"],
                spaces=record.get("spaces"),
                tags=record.get("tags"),
                pos=record.get("pos"),
                ents=record.get("entities") or None,
            )
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{path}:{number}: {err}") from err
    elif "text" in record:
        from spacy.lang.en import English

        doc = English(vocab).make_doc(record["text"])
        spans = [doc.char_span(s, e, label=label) for s, e, label in record.get("entities", [])]
        if any(span is None for span in spans):
            raise ValueError(f"{path}:{number}: an entity does not match token boundaries.")
        doc.ents = spans  # type: ignore[assignment]
    else:
        raise ValueError(f'{path}:{number}: each line needs "words" or "text".')
    doc.cats = dict(cats)
    return doc


def infer_pipeline(docs: list[Doc]) -> list[str]:
    """The components the annotations of docs can train."""
    pipeline = []
    if any(doc.has_annotation("TAG") for doc in docs):
        pipeline.append("tagger")
    if any(doc.has_annotation("POS") or doc.has_annotation("MORPH") for doc in docs):
        pipeline.append("morphologizer")
    if any(doc.has_annotation("DEP") for doc in docs):
        pipeline.append("parser")
    if any(doc.has_annotation("ENT_IOB") for doc in docs):
        pipeline.append("ner")
    cats = [doc.cats for doc in docs if doc.cats]
    if cats:
        exclusive = all(sum(1 for v in c.values() if v >= 0.5) == 1 for c in cats)
        pipeline.append("textcat" if exclusive else "textcat_multilabel")
    if not pipeline:
        raise ValueError("The training data has no annotations (tags, entities, cats, ...).")
    return pipeline


def write_docbin(docs: list[Doc], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs, store_user_data=False).to_disk(path)
