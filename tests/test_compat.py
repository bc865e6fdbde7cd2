"""Saved pipelines keep loading: the pipeline saved by spacy-trf 0.1.0 (../shared/compat) loads
offline from a read-only copy and predicts what 0.1.0 predicted."""

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import spacy

from .fixtures_models import COMPAT

SAVED = COMPAT / "pipeline-0.1.0"
EXPECTED = COMPAT / "expected-0.1.0.json"

pytestmark = pytest.mark.skipif(not SAVED.exists(), reason="needs ../shared/compat")


@pytest.fixture(scope="module")
def read_only_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("compat") / "pipeline-0.1.0"
    shutil.copytree(SAVED, path)
    for item in [path, *path.rglob("*")]:
        mode = item.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        item.chmod(mode)
    yield path
    for item in [path, *path.rglob("*")]:
        item.chmod(item.stat().st_mode | stat.S_IWUSR)


def test_pipeline_saved_by_0_1_0_reproduces_its_predictions(
    read_only_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if os.geteuid() != 0:  # root writes through file modes; the snapshot below still checks
        with pytest.raises(PermissionError):
            (read_only_copy / "probe").write_text("")
    before = snapshot(read_only_copy)
    nlp = spacy.load(read_only_copy)
    assert nlp.pipe_names == ["trf", "tagger", "ner", "textcat"]
    expected = json.loads(EXPECTED.read_text())["texts"]
    assert len(expected) == 5
    for want in expected:
        doc = nlp(want["text"])
        assert [t.text for t in doc] == want["tokens"]
        assert [t.tag_ for t in doc] == want["tags"]
        assert [[e.start_char, e.end_char, e.label_] for e in doc.ents] == want["ents"]
        assert doc.cats.keys() == want["cats"].keys()
        np.testing.assert_allclose(
            [doc.cats[k] for k in want["cats"]], list(want["cats"].values()), atol=1e-3
        )
        out = doc._.trf
        assert len(out.piece_ids) == want["n_pieces"]
        hidden = np.asarray(out.last_hidden_state)[:, :8]
        got = hidden.mean(0).tolist() if len(hidden) else []
        np.testing.assert_allclose(got, want["hidden_mean_first8"], atol=1e-3)
    assert snapshot(read_only_copy) == before  # loading and predicting wrote nothing


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")
    }
