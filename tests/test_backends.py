"""Inference backends (``inference`` = torch, bf16, int8, onnx): outputs close to PyTorch's, the
choice saved with the pipeline and loaded offline, converted models rebuilt after training, and
``spacy-trf export-onnx``."""

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
from spacy.training import Example
from thinc.api import Adam
from typer.testing import CliRunner

import spacy_trf.backends
from spacy_trf.cli import app
from spacy_trf.model import get_shim

from .conftest import make_nlp

TEXTS = [
    "The harbour town woke slowly.",
    "She paid $12.50 for two croissants, a crème brûlée and a coffee. " * 12,  # several windows
    "",
]
pytest.importorskip("onnxruntime")


def rows(nlp: spacy.Language, texts: list[str] = TEXTS) -> np.ndarray:
    return np.concatenate([doc._.trf.last_hidden_state for doc in nlp.pipe(texts)])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def onnx_pipeline(model_dirs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RoBERTa pipeline (no token type ids) saved with inference = "onnx"."""
    path = tmp_path_factory.mktemp("onnx") / "pipeline"
    make_nlp(model_dirs["roberta"], inference="onnx").to_disk(path)
    return path


@pytest.mark.parametrize("backend", ["bf16", "int8"])
def test_torch_backends_stay_close_to_fp32(
    model_dirs: dict[str, str], family: str, backend: str
) -> None:
    expected = rows(make_nlp(model_dirs[family]))
    got = rows(make_nlp(model_dirs[family], inference=backend))
    assert got.shape == expected.shape and got.dtype == np.float32
    assert not np.array_equal(got, expected)  # the backend really ran
    # Per-channel int8 on MiniLM keeps a mean cosine of about 0.96; bf16 about 0.9999.
    floor = 0.999 if backend == "bf16" else 0.9
    assert cosines(got, expected).mean() > floor


def test_onnx_matches_torch_and_is_saved_beside_the_weights(
    model_dirs: dict[str, str], onnx_pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = rows(make_nlp(model_dirs["roberta"]))
    assert (onnx_pipeline / "trf" / "model" / "model.onnx").is_file()
    assert 'inference = "onnx"' in (onnx_pipeline / "config.cfg").read_text()

    def no_export(*args: Any) -> None:
        raise AssertionError("a saved pipeline must not export again")

    monkeypatch.setattr(spacy_trf.backends, "export_onnx", no_export)
    loaded = spacy.load(onnx_pipeline)
    assert loaded.get_pipe("trf").inference == "onnx"
    np.testing.assert_allclose(rows(loaded), expected, atol=1e-4)
    # to_bytes carries model.onnx too.
    fresh = spacy.blank("en").from_config(loaded.config).from_bytes(loaded.to_bytes())
    np.testing.assert_allclose(rows(fresh), expected, atol=1e-4)


def test_inference_can_be_chosen_when_loading(onnx_pipeline: Path) -> None:
    nlp = spacy.load(onnx_pipeline, config={"components": {"trf": {"inference": "int8"}}})
    assert nlp.get_pipe("trf").inference == "int8"
    assert get_shim(nlp.get_pipe("trf").model).onnx is None  # model.onnx is not even read
    torch_rows = rows(
        spacy.load(onnx_pipeline, config={"components": {"trf": {"inference": "torch"}}})
    )
    assert cosines(rows(nlp), torch_rows).mean() > 0.9


@pytest.mark.parametrize("backend", ["int8", "onnx"])
def test_converted_models_follow_training_updates(model_dirs: dict[str, str], backend: str) -> None:
    nlp = make_nlp(model_dirs["roberta"], inference=backend)
    nlp.add_pipe(
        "tagger",
        config={
            "model": {
                "tok2vec": {
                    "@architectures": "spacy-trf.TransformerListener.v1",
                    "pooling": {"@layers": "reduce_mean.v1"},
                }
            }
        },
    )
    egs = [Example.from_dict(nlp.make_doc("Dogs bark loudly ."), {"tags": ["N", "V", "A", "P"]})]
    nlp.initialize(lambda: egs)
    before = rows(nlp)
    optimizer = Adam(0.01)
    for _ in range(3):
        nlp.update(egs, sgd=optimizer)
    after = rows(nlp)
    assert not np.allclose(before, after, atol=1e-3)  # predictions use the new weights
    nlp.get_pipe("trf").set_inference("torch")
    atol = 1e-4 if backend == "onnx" else 0.1
    np.testing.assert_allclose(after, rows(nlp), atol=atol)


def test_bad_inference_values_and_unsupported_outputs(model_dirs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="inference must be one of 'torch', 'bf16'"):
        make_nlp(model_dirs["roberta"], inference="fp16")
    nlp = make_nlp(model_dirs["roberta"], inference="onnx", model={"output_attentions": True})
    with pytest.raises(ValueError, match="output_attentions is not available"):
        nlp("Some text.")


def test_onnx_with_all_hidden_states(model_dirs: dict[str, str]) -> None:
    config = {"model": {"output_hidden_states": True}}
    expected = [d._.trf.hidden_states for d in make_nlp(model_dirs["xlmr"], **config).pipe(TEXTS)]
    got = [
        d._.trf.hidden_states
        for d in make_nlp(model_dirs["xlmr"], inference="onnx", **config).pipe(TEXTS)
    ]
    for doc_expected, doc_got in zip(expected, got, strict=True):
        assert len(doc_got) == len(doc_expected) == 3  # embeddings + 2 layers
        for a, b in zip(doc_expected, doc_got, strict=True):
            np.testing.assert_allclose(b, a, atol=1e-4)


def test_export_onnx_cli(model_dirs: dict[str, str], tmp_path: Path) -> None:
    """BERT (token type ids) through the CLI: a new pipeline directory that runs on ONNX."""
    source = tmp_path / "source"
    nlp = make_nlp(model_dirs["bert"])
    expected = rows(nlp)
    nlp.to_disk(source)
    runner = CliRunner()
    result = runner.invoke(app, ["export-onnx", str(source), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "largest difference from PyTorch" in result.output
    assert not (source / "trf" / "model" / "model.onnx").exists()  # the source is untouched
    loaded = spacy.load(tmp_path / "out")
    assert loaded.get_pipe("trf").inference == "onnx"
    np.testing.assert_allclose(rows(loaded), expected, atol=1e-4)

    again = runner.invoke(app, ["export-onnx", str(source), str(tmp_path / "out")])
    assert again.exit_code == 1 and "not empty" in again.output
    shutil.rmtree(tmp_path / "out")
    wrong = runner.invoke(app, ["export-onnx", str(source), str(tmp_path / "o"), "-c", "ner"])
    assert wrong.exit_code == 1 and "No trf component named ['ner']" in wrong.output
    assert not (tmp_path / "o").exists()
