import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# inference = "auto" remembers its choices for this test session only, not in the user's cache
os.environ["SPACY_TRF_CACHE"] = tempfile.mkdtemp(prefix="spacy-trf-cache-")
atexit.register(shutil.rmtree, os.environ["SPACY_TRF_CACHE"], ignore_errors=True)

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import spacy  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from .fixtures_models import build_gpt2, build_roberta, build_xlmr, minilm_path  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

FAMILIES = ["bert", "roberta", "xlmr"]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Local model directories, one per tokenizer family (WordPiece, byte-BPE, Unigram)."""
    root = tmp_path_factory.mktemp("models")
    return {
        "bert": minilm_path(),
        "roberta": build_roberta(root / "roberta"),
        "xlmr": build_xlmr(root / "xlmr"),
        "gpt2": build_gpt2(root / "gpt2"),
    }


def make_nlp(path: str, before: tuple[str, ...] = (), **config: Any) -> spacy.Language:
    """A blank English pipeline with a trf component over the model at ``path``, after the
    components named in ``before``."""
    nlp = spacy.blank("en")
    for name in before:
        nlp.add_pipe(name)
    model_cfg = {"name": path, **config.pop("model", {})}
    nlp.add_pipe("trf", config={"model": model_cfg, **config})
    nlp.initialize()
    return nlp


@pytest.fixture(scope="session")
def nlp_factory(model_dirs: dict[str, str]) -> Callable[..., spacy.Language]:
    cache: dict[str, spacy.Language] = {}

    def get(family: str, **config: Any) -> spacy.Language:
        if config:
            return make_nlp(model_dirs[family], **config)
        if family not in cache:
            cache[family] = make_nlp(
                model_dirs[family],
                set_extra_annotations={"@annotation_setters": "spacy-trf.doc_tensor.v1"},
            )
        return cache[family]

    return get


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def nlp(nlp_factory: Callable[..., spacy.Language], family: str) -> spacy.Language:
    return nlp_factory(family)


def data_dir() -> Path:
    return Path(
        os.environ.get("SPACY_TRF_DATA", Path(__file__).parent.parent.parent / "shared" / "data")
    )
