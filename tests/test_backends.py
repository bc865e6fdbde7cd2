"""Inference backends (``inference`` = torch, bf16, int8, compile, onnx): outputs close to
PyTorch's, the choice saved with the pipeline and loaded offline, converted models rebuilt after
training, and ``spacy-trf export-onnx``."""

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
import torch
from spacy.training import Example
from thinc.api import SGD, Adam
from typer.testing import CliRunner

import spacy_trf.encoder.backends
from spacy_trf.cli import app
from spacy_trf.encoder import get_shim
from spacy_trf.encoder.backends import int8 as int8_backend

from .conftest import make_nlp
from .marks import needs_bf16

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


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("bf16", marks=needs_bf16),
        "int8",
    ],
)
@pytest.mark.filterwarnings("ignore:inference = .bf16.")
def test_torch_backends_stay_close_to_fp32(
    model_dirs: dict[str, str], family: str, backend: str
) -> None:
    expected = rows(make_nlp(model_dirs[family]))
    got = rows(make_nlp(model_dirs[family], inference=backend))
    assert got.shape == expected.shape and got.dtype == np.float32
    assert not np.array_equal(got, expected)  # the backend really ran
    # bf16 keeps a mean cosine of about 0.9999; int8 on MiniLM about 0.99 with 8-bit activations
    # (AVX512-VNNI), 0.98 without (the random-weight test models: lower).
    eight_bits = family == "bert" and int8_backend.full_range_int8()
    floor = 0.999 if backend == "bf16" else 0.98 if eight_bits else 0.9
    assert cosines(got, expected).mean() > floor


@pytest.mark.parametrize("full_range", [True, False])
def test_int8_quantizes_every_linear_only_with_8_bit_activations(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch, full_range: bool
) -> None:
    monkeypatch.setattr(int8_backend, "full_range_int8", lambda: full_range)
    shim = get_shim(make_nlp(model_dirs["bert"]).get_pipe("trf").model)
    linears = [m for m in shim.hf_model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = int8_backend.quantize_int8(copy.deepcopy(shim.hf_model).eval())
    int8 = [m for m in quantized.modules() if isinstance(m, int8_backend.Int8Linear)]
    fp32 = [m for m in quantized.modules() if type(m) is torch.nn.Linear]
    assert int8 and all(m.full_range is full_range for m in int8)
    assert len(int8) + len(fp32) == len(linears)
    x = torch.randn(3, 7, int8[0].in_features)
    packed = int8[0]._packed_params._packed_params
    seven_bits = torch.ops.quantized.linear_dynamic(x, packed, reduce_range=True)
    assert torch.equal(int8[0](x), seven_bits) is not full_range
    if full_range:
        assert not fp32
    else:  # the feed-forward output projections, one per layer
        assert len(fp32) == shim.hf_model.config.num_hidden_layers
        assert all(m.in_features > m.out_features for m in fp32)


def test_onnx_matches_torch_and_is_saved_beside_the_weights(
    model_dirs: dict[str, str], onnx_pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = rows(make_nlp(model_dirs["roberta"]))
    assert (onnx_pipeline / "trf" / "model" / "model.onnx").is_file()
    assert 'inference = "onnx"' in (onnx_pipeline / "config.cfg").read_text()

    def no_export(*args: Any) -> None:
        raise AssertionError("a saved pipeline must not export again")

    monkeypatch.setattr(spacy_trf.encoder.backends, "export_onnx", no_export)
    loaded = spacy.load(onnx_pipeline)
    assert loaded.get_pipe("trf").inference == "onnx"
    np.testing.assert_allclose(rows(loaded), expected, atol=1e-4)
    assert onnx_session_ran(loaded)
    # to_bytes carries model.onnx too.
    fresh = spacy.blank("en").from_config(loaded.config).from_bytes(loaded.to_bytes())
    np.testing.assert_allclose(rows(fresh), expected, atol=1e-4)
    assert onnx_session_ran(fresh)


def onnx_session_ran(nlp: spacy.Language) -> bool:
    onnx = get_shim(nlp.get_pipe("trf").model).backends.onnx
    return onnx is not None and onnx.session is not None


def test_inference_can_be_chosen_when_loading(
    onnx_pipeline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nlp = spacy.load(onnx_pipeline, config={"components": {"trf": {"inference": "int8"}}})
    assert nlp.get_pipe("trf").inference == "int8"
    onnx = get_shim(nlp.get_pipe("trf").model).backends.onnx
    assert onnx is not None and onnx.data is None  # model.onnx is noted, not read
    torch_rows = rows(
        spacy.load(onnx_pipeline, config={"components": {"trf": {"inference": "torch"}}})
    )
    int8_rows = rows(nlp)
    assert not np.array_equal(int8_rows, torch_rows)
    assert cosines(int8_rows, torch_rows).mean() > 0.9

    def no_export(*args: Any) -> None:
        raise AssertionError("switching to onnx must use the saved model.onnx")

    monkeypatch.setattr(spacy_trf.encoder.backends, "export_onnx", no_export)
    nlp.get_pipe("trf").set_inference("onnx")
    np.testing.assert_allclose(rows(nlp), torch_rows, atol=1e-4)
    assert onnx_session_ran(nlp)


def test_compile_matches_torch_with_compiled_graphs_reused_after_updates(
    model_dirs: dict[str, str],
) -> None:
    """fp32 with fused kernels: the same outputs from graphs that really were compiled, without
    graph breaks; one compiled copy, reused until the weights change, then rebuilt without
    recompiling; switching away frees it."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # no graphs cached by earlier tests: this one must compile its own
    expected = rows(make_nlp(model_dirs["bert"]))
    nlp = make_nlp(model_dirs["bert"], inference="compile")
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    got = rows(nlp)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert counters["stats"]["unique_graphs"] > graphs  # compiled, not run eagerly
    assert sum(counters["graph_break"].values()) == breaks
    shim = get_shim(nlp.get_pipe("trf").model)
    converted = shim.backends.converted
    assert converted is not None and converted.backend == "compile"
    compiled = converted.model
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled._orig_mod is not shim.hf_model  # a copy: training never touches it
    np.testing.assert_allclose(rows(nlp), got, atol=1e-6)
    assert shim.backends.converted is converted
    for param in shim.hf_model.parameters():  # a training step: every weight times 0.9
        param.grad = param.detach() * 0.1
    shim.finish_update(SGD(1.0, L2=0.0, grad_clip=0.0))
    with torch._dynamo.config.patch(error_on_recompile=True):
        updated = rows(nlp)
    assert shim.backends.converted is not None
    assert shim.backends.converted.model is not compiled
    nlp.get_pipe("trf").set_inference("torch")
    assert shim.backends.converted is None
    np.testing.assert_allclose(updated, rows(nlp), atol=1e-4)


@pytest.mark.parametrize("missing", ["compiler", "headers"])
def test_compile_without_a_cpp_toolchain_says_what_to_install(
    model_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    import sysconfig

    from torch._inductor import cpp_builder, exc

    def no_compiler() -> str:
        raise exc.InvalidCxxCompiler

    if missing == "compiler":
        monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
        expected = "needs a C.. compiler and Python headers on CPU"
    else:
        paths = sysconfig.get_paths()
        monkeypatch.setattr(sysconfig, "get_paths", lambda: {**paths, "include": "/nowhere"})
        expected = "needs Python headers .Python.h. on CPU"
    nlp = make_nlp(model_dirs["roberta"], inference="compile")
    with pytest.raises(ValueError, match=f"{expected}.*apt install g.. python3-dev"):
        nlp("A short text.")


@pytest.mark.parametrize("backend", ["int8", "compile", "onnx"])
def test_converted_models_follow_training_updates(
    model_dirs: dict[str, str], backend: str, tmp_path: Path
) -> None:
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
    if backend == "onnx":
        assert onnx_session_ran(nlp)
        nlp.to_disk(tmp_path / "trained")  # saves the model.onnx of the trained weights
        np.testing.assert_allclose(rows(spacy.load(tmp_path / "trained")), after, atol=1e-5)
    nlp.get_pipe("trf").set_inference("torch")
    atol = 0.1 if backend == "int8" else 1e-4
    np.testing.assert_allclose(after, rows(nlp), atol=atol)


def test_bad_inference_values_and_unsupported_outputs(model_dirs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="inference must be one of 'torch', 'bf16'"):
        make_nlp(model_dirs["roberta"], inference="fp16")
    with pytest.raises(ValueError, match="output_attentions is not available"):
        make_nlp(model_dirs["roberta"], inference="onnx", model={"output_attentions": True})
    nlp = make_nlp(model_dirs["roberta"], model={"output_attentions": True})
    with pytest.raises(ValueError, match="output_attentions is not available"):
        nlp.get_pipe("trf").set_inference("onnx")


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


def test_frozen_heads_train_on_torch_features_and_cache_per_backend(
    model_dirs: dict[str, str],
) -> None:
    nlp = make_nlp(model_dirs["roberta"], frozen=True, feature_cache_mb=64, inference="int8")
    trf = nlp.get_pipe("trf")
    egs = [Example.from_dict(nlp.make_doc(t), {}) for t in TEXTS[:2]]
    trf.update(egs)
    torch_rows = rows(make_nlp(model_dirs["roberta"]), TEXTS[:2])
    trained_on = np.concatenate([eg.predicted._.trf.last_hidden_state for eg in egs])
    np.testing.assert_allclose(trained_on, torch_rows, atol=1e-5)
    int8_rows = rows(nlp, TEXTS[:2])  # same texts, now cached: but not the torch outputs
    assert not np.array_equal(int8_rows, torch_rows)
    trf.set_inference("torch")
    np.testing.assert_allclose(rows(nlp, TEXTS[:2]), torch_rows, atol=1e-5)


def test_replace_listeners_after_onnx_predictions(model_dirs: dict[str, str]) -> None:
    nlp = make_nlp(model_dirs["roberta"], inference="onnx")
    listener = {
        "@architectures": "spacy-trf.TransformerListener.v1",
        "pooling": {"@layers": "reduce_mean.v1"},
    }
    nlp.add_pipe("tagger", config={"model": {"tok2vec": listener}})
    egs = [Example.from_dict(nlp.make_doc("Dogs bark ."), {"tags": ["N", "V", "P"]})]
    nlp.initialize(lambda: egs)
    tags = [t.tag_ for t in nlp("Dogs bark loudly .")]
    assert onnx_session_ran(nlp)
    nlp.replace_listeners("trf", "tagger", ["model.tok2vec"])  # copies the encoder
    assert [t.tag_ for t in nlp("Dogs bark loudly .")] == tags


def test_auto_is_written_by_init_config(model_dirs: dict[str, str]) -> None:
    from spacy_trf.cli.init_config import make_config

    config = make_config(["tagger"], model=model_dirs["roberta"])
    assert config["components"]["trf"]["inference"] == "auto"
