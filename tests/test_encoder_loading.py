"""Loading encoders safely: damaged, foreign or unsafe model directories give one clear error
naming the file; an unreachable Hub fails (or falls back to the cache) at once."""

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spacy_trf.encoder import ModelLoadError, hub, load_hf

from .conftest import make_nlp


@pytest.fixture()
def roberta_copy(model_dirs: dict[str, str], tmp_path: Path) -> Path:
    path = tmp_path / "model"
    shutil.copytree(model_dirs["roberta"], path)
    return path


def test_truncated_or_corrupt_weights_name_the_file(roberta_copy: Path) -> None:
    weights = roberta_copy / "model.safetensors"
    data = weights.read_bytes()
    for damaged in (data[:1000], data[:8] + b"\x00" * 64 + data[72:]):
        weights.write_bytes(damaged)
        with pytest.raises(ModelLoadError, match=r"model\.safetensors\) are truncated or corrupt"):
            load_hf(str(roberta_copy))


def test_missing_tokenizer_file_is_refused(roberta_copy: Path) -> None:
    """Without tokenizer.json transformers 5 builds an empty tokenizer (every word unknown)."""
    (roberta_copy / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json is missing"):
        load_hf(str(roberta_copy))


@pytest.mark.parametrize("other", ["bert", "deberta-v2"])
def test_config_of_another_architecture_is_refused(
    roberta_copy: Path, model_dirs: dict[str, str], other: str
) -> None:
    """Another model's config.json: shapes that differ (MiniLM's config) or weights that it
    does not name (DeBERTa's layout), never a silently random encoder."""
    if other == "bert":
        shutil.copy(Path(model_dirs["bert"]) / "config.json", roberta_copy / "config.json")
    else:
        config = json.loads((roberta_copy / "config.json").read_text())
        config.update(model_type="deberta-v2", architectures=["DebertaV2Model"])
        (roberta_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="config.json"):
        load_hf(str(roberta_copy))


def _pickle_only(path: Path) -> None:
    state = load_file(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")


def test_pickled_weights_are_refused_unless_opted_in(roberta_copy: Path) -> None:
    _pickle_only(roberta_copy)
    with pytest.raises(
        ModelLoadError, match=r"pytorch_model\.bin in pickle format.*use_safetensors"
    ):
        load_hf(str(roberta_copy))
    model, _ = load_hf(str(roberta_copy), transformer_config={"use_safetensors": False})
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("fname", ["tokenizer.pkl", "weights.pt"])
def test_pickle_files_beside_safetensors(roberta_copy: Path, fname: str) -> None:
    """Extra weights in pickle format are never read while safetensors exist; pickled files
    of any other kind make the directory refused."""
    torch.save({"x": torch.zeros(1)}, roberta_copy / fname)
    if fname.endswith(".pkl"):
        with pytest.raises(ModelLoadError, match="tokenizer.pkl in pickle format"):
            load_hf(str(roberta_copy))
    else:
        load_hf(str(roberta_copy))


def test_remote_code_is_not_run_unless_trusted(roberta_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    (roberta_copy / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import RobertaModel as EvilModel, RobertaConfig as EvilConfig\n"
    )
    config = json.loads((roberta_copy / "config.json").read_text())
    config.update(
        model_type="evil",
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
    )
    (roberta_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        make_nlp(str(roberta_copy))
    assert not marker.exists()


@pytest.fixture()
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Online mode (no HF_HUB_OFFLINE) with a Hub endpoint that refuses connections."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)  # read at import
    for var in hub.PROXY_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub.constants, "ENDPOINT", "http://127.0.0.1:9")


def test_unreachable_hub_fails_at_once(no_hub: None) -> None:
    """huggingface_hub alone retries for ~25 s before it gives up."""
    assert not hub.hub_reachable()
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="cannot be reached.*not in the local cache"):
        load_hf("nobody/missing-model")
    assert time.perf_counter() - start < 10


def test_unreachable_hub_loads_a_cached_model(
    no_hub: None, model_dirs: dict[str, str], tmp_path: Path
) -> None:
    """A hub id in the local cache loads from it, as with HF_HUB_OFFLINE=1."""
    snapshot = tmp_path / "models--someone--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(model_dirs["roberta"], snapshot)
    (tmp_path / "models--someone--tiny" / "refs").mkdir()
    (tmp_path / "models--someone--tiny" / "refs" / "main").write_text("0" * 40)
    start = time.perf_counter()
    model, tokenizer = load_hf("someone/tiny", transformer_config={"cache_dir": str(tmp_path)})
    assert time.perf_counter() - start < 10
    assert tokenizer("harbour town").input_ids and model.config.hidden_size == 32
