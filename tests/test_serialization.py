"""Save / load: plain HF directories, safetensors only, no network, no original model path."""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
import srsly

from .conftest import make_nlp

TEXTS = ["A short sentence.", "Another one, with 9.11 and the Devil Ray's rookie. " * 12]


def outputs(nlp: spacy.Language) -> list[np.ndarray]:
    return [doc._.trf.last_hidden_state for doc in nlp.pipe(TEXTS)]


def test_to_disk_writes_plain_hf_dir_and_loads_without_original(
    model_dirs: dict[str, str], family: str, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model_dirs[family], copy)
    nlp = make_nlp(str(copy), model={"window": 48, "stride": 40})
    before = outputs(nlp)
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(copy)

    hf_dir = tmp_path / "pipeline" / "trf" / "model"
    files = {p.name for p in hf_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl", ".pickle")) for name in files)
    assert not any(p.name.startswith(".") for p in (tmp_path / "pipeline" / "trf").iterdir())

    loaded = spacy.load(tmp_path / "pipeline")
    for a, b in zip(before, outputs(loaded), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert loaded.get_pipe("trf").model.attrs["window"] == 48

    # The saved directory is a Hugging Face model in its own right.
    from transformers import AutoModel, AutoTokenizer

    assert AutoTokenizer.from_pretrained(hf_dir).is_fast
    assert AutoModel.from_pretrained(hf_dir).config.hidden_size == before[0].shape[1]


def test_to_bytes_round_trip(model_dirs: dict[str, str], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model_dirs["roberta"], copy)
    nlp = make_nlp(str(copy))
    data = nlp.to_bytes()
    before = outputs(nlp)
    config = nlp.config
    shutil.rmtree(copy)
    fresh = spacy.blank("en").from_config(config)
    fresh.from_bytes(data)
    for a, b in zip(before, outputs(fresh), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    files = srsly.msgpack_loads(nlp.get_pipe("trf").model.shims[0].to_bytes())["files"]
    assert "model.safetensors" in files and "config.json" in files
    assert not any(name.endswith((".bin", ".pt")) for name in files)


def test_overwriting_a_saved_pipeline(model_dirs: dict[str, str], tmp_path: Path) -> None:
    nlp = make_nlp(model_dirs["roberta"])
    nlp.to_disk(tmp_path / "p")
    nlp.to_disk(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p" / "trf").iterdir()) == ["cfg", "model"]
    assert spacy.load(tmp_path / "p")("ok")._.trf is not None


def test_load_from_disk_of_missing_dir_is_clear(model_dirs: dict[str, str], tmp_path: Path) -> None:
    nlp = make_nlp(model_dirs["roberta"])
    nlp.to_disk(tmp_path / "p")
    shutil.rmtree(tmp_path / "p" / "trf" / "model")
    with pytest.raises(OSError, match="No saved transformer"):
        spacy.load(tmp_path / "p")


def test_docs_with_outputs_serialize(nlp_factory: Callable[..., spacy.Language]) -> None:
    from spacy.tokens import Doc, DocBin

    nlp = nlp_factory("roberta", model={"output_hidden_states": True})
    doc = nlp("Docs with encoder outputs travel between processes. " * 5)
    restored = Doc(nlp.vocab).from_bytes(doc.to_bytes())
    a, b = doc._.trf, restored._.trf
    np.testing.assert_array_equal(a.last_hidden_state, b.last_hidden_state)
    np.testing.assert_array_equal(a.align.dataXd, b.align.dataXd)
    np.testing.assert_array_equal(a.align.lengths, b.align.lengths)
    assert a.piece_texts == b.piece_texts and a.n_special == b.n_special
    assert len(b.hidden_states) == len(a.hidden_states)
    bin_ = DocBin(store_user_data=True, docs=[doc])
    again = list(DocBin().from_bytes(bin_.to_bytes()).get_docs(nlp.vocab))[0]
    np.testing.assert_array_equal(again._.trf.special_hidden_state, a.special_hidden_state)


def test_output_arrays_map_once_and_stay_shared(
    nlp_factory: Callable[..., spacy.Language],
) -> None:
    # What the feature cache copies and the codec converts: every array once, sharing kept.
    nlp = nlp_factory("roberta", model={"output_hidden_states": True})
    out = nlp("Outputs share their last layer with last_hidden_state. " * 3)._.trf
    assert out.hidden_states[-1] is out.last_hidden_state
    calls: list[int] = []
    copy = out.map_arrays(lambda a: calls.append(1) or np.array(a, copy=True))
    assert len(calls) == len(out.arrays()) == len({id(a) for a in copy.arrays()})
    assert copy.hidden_states[-1] is copy.last_hidden_state
    for a, b in zip(out.arrays(), copy.arrays(), strict=True):
        assert not np.shares_memory(a, b)
        np.testing.assert_array_equal(a, b)
    assert copy.piece_texts == out.piece_texts and copy.n_special == out.n_special


def test_transformer_config_is_kept_after_loading(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    from spacy_trf.encoder import get_shim

    nlp = make_nlp(
        model_dirs["roberta"], model={"transformer_config": {"attn_implementation": "eager"}}
    )
    assert get_shim(nlp.get_pipe("trf").model).hf_model.config._attn_implementation == "eager"
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert get_shim(loaded.get_pipe("trf").model).hf_model.config._attn_implementation == "eager"


def test_an_encoder_restored_by_thinc_keeps_its_options(model_dirs: dict[str, str]) -> None:
    """Model.from_bytes (how a component's own encoder loads) settles the options again: an
    encoder asked for attentions still returns them."""
    from spacy_trf.models import TransformerModel
    from spacy_trf.pieces import configure_doc_spans

    def encoder() -> Any:
        return TransformerModel(
            model_dirs["roberta"], configure_doc_spans(), window=16, stride=10,
            output_attentions=True,
        )  # fmt: skip

    nlp = spacy.blank("en")
    doc = nlp.make_doc(TEXTS[1])
    source = encoder()
    source.initialize()
    restored = encoder().from_bytes(source.to_bytes())
    (want,) = source.predict([doc])
    (got,) = restored.predict([doc])
    assert got.attentions is not None and len(got.attentions) == len(want.attentions)
    np.testing.assert_allclose(got.attentions[0], want.attentions[0], atol=1e-5)


def test_copies_of_the_trf_model_do_not_copy_the_component(model_dirs: dict[str, str]) -> None:
    """nlp.replace_listeners copies the trf model (Thinc deep-copies its attrs): the copy must
    not drag the component, its cache and listeners along."""
    from spacy_trf.encoder import get_shim

    nlp = make_nlp(model_dirs["roberta"])
    model = nlp.get_pipe("trf").model
    copied = model.copy()
    assert copied.attrs["replace_listener_cfg"].shim() is get_shim(model)
    assert get_shim(copied) is not get_shim(model)


def test_a_copied_pipeline_replaces_listeners_after_the_original_is_gone(
    model_dirs: dict[str, str],
) -> None:
    """copy.deepcopy(nlp), then the original freed: the copy's listener config still has the
    trf component's options."""
    import copy
    import gc

    nlp = make_nlp(model_dirs["roberta"], max_batch_pieces=512)
    copied = copy.deepcopy(nlp)
    del nlp
    gc.collect()
    listener_config = copied.get_pipe("trf").model.attrs["replace_listener_cfg"]
    listener = {"@architectures": "spacy-trf.TransformerListener.v1", "pooling": {}}
    cfg = listener_config(dict(copied.config["components"]["trf"]["model"]), listener)
    assert cfg["@architectures"] == "spacy-trf.Tok2VecTransformer.v2"
    assert cfg["max_batch_pieces"] == 512


LISTENING_TAGGER = {
    "@architectures": "spacy.Tagger.v2",
    "tok2vec": {
        "@architectures": "spacy-trf.TransformerListener.v1",
        "pooling": {"@layers": "reduce_mean.v1"},
    },
}


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("failing", ["weights", "tagger"])
def test_a_save_that_fails_midway_leaves_the_old_pipeline(
    model_dirs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """to_disk over a saved pipeline that fails (a full disk while the encoder's weights are
    written, or in the component after it) leaves the old pipeline byte for byte, loadable, and
    nothing else behind; a user's own file in the directory survives every save."""
    from spacy.pipeline import Tagger
    from transformers import PreTrainedModel

    nlp = make_nlp(model_dirs["roberta"])
    nlp.add_pipe("tagger", config={"model": LISTENING_TAGGER}).add_label("X")
    nlp.initialize()
    target = tmp_path / "pipeline"
    nlp.to_disk(target)
    (target / "NOTES.md").write_text("kept")
    before, expected = _tree(target), outputs(spacy.load(target))

    def disk_full(self: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "partial").write_bytes(b"\0" * 100)
        raise OSError(28, "No space left on device")

    cls: Any = PreTrainedModel if failing == "weights" else Tagger
    with monkeypatch.context() as patch:
        patch.setattr(cls, "save_pretrained" if failing == "weights" else "to_disk", disk_full)
        with pytest.raises(OSError, match="No space left"):
            nlp.to_disk(target)
    assert _tree(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["pipeline"]
    for got, want in zip(outputs(spacy.load(target)), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    nlp.to_disk(target)
    assert (target / "NOTES.md").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["pipeline"]
    assert spacy.load(target).pipe_names == ["trf", "tagger"]
