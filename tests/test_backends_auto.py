"""``inference = "auto"``: chosen by measurement against fp32, remembered per machine and model,
safe with threads, broken cache files and backends that cannot run here."""

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
import torch

import spacy_trf.encoder.backends
from spacy_trf.encoder import forward as forward_module
from spacy_trf.encoder import get_shim
from spacy_trf.encoder.backends import auto, choices

from .conftest import make_nlp

TEXTS = [
    "The harbour town woke slowly.",
    "She paid $12.50 for two croissants, a crème brûlée and a coffee. " * 12,  # several windows
    "",
]


@pytest.fixture
def auto_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty choice cache, on disk and in this process."""
    monkeypatch.setenv(choices.CACHE_ENV, str(tmp_path))
    auto.forget_choices()
    yield tmp_path / choices.CACHE_FILE
    auto.forget_choices()


def rows(nlp: spacy.Language, texts: list[str] = TEXTS) -> np.ndarray:
    return np.concatenate([doc._.trf.last_hidden_state for doc in nlp.pipe(texts)])


def chosen(nlp: spacy.Language) -> auto.Choice:
    choice = get_shim(nlp.get_pipe("trf").model).backends.chosen
    assert choice is not None
    return choice


def test_auto_measures_once_per_machine_and_predicts_with_its_choice(
    model_dirs: dict[str, str], auto_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nlp = make_nlp(model_dirs["bert"], inference="auto")
    got = rows(nlp)
    choice = chosen(nlp)
    assert choice.measured
    assert {t.backend for t in choice.trials} == set(auto.candidates(torch.device("cpu")))
    ran = [t for t in choice.trials if t.seconds is not None]
    assert ran and all(t.seconds > 0 and 0.5 < t.cosine <= 1 for t in ran)  # type: ignore[operator]
    assert choice.backend == auto.decide(choice.trials)
    np.testing.assert_array_equal(got, rows(make_nlp(model_dirs["bert"], inference=choice.backend)))
    saved = json.loads(auto_cache.read_text())
    assert list(saved) == [choice.key] and saved[choice.key]["backend"] == choice.backend
    assert f"torch {torch.__version__}" in choice.key and "BertModel 6x384x1536" in choice.key

    # a new process (no choices in memory) reads the file instead of measuring
    auto.forget_choices()
    monkeypatch.setattr(auto, "measure", lambda *a: pytest.fail("measured again"))
    again = make_nlp(model_dirs["bert"], inference="auto")
    np.testing.assert_array_equal(rows(again), got)
    assert not chosen(again).measured and chosen(again).backend == choice.backend


def test_auto_keeps_a_lossy_choice_and_chooses_again_for_other_weights(
    model_dirs: dict[str, str], auto_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auto, "decide", lambda trials: "int8")
    nlp = make_nlp(model_dirs["roberta"], inference="auto")
    got = rows(nlp)
    assert chosen(nlp).backend == "int8"
    np.testing.assert_array_equal(got, rows(make_nlp(model_dirs["roberta"], inference="int8")))
    assert not np.array_equal(got, rows(make_nlp(model_dirs["roberta"])))
    # other weights of the same architecture (a fine-tuned copy) get their own measurement
    other = make_nlp(model_dirs["roberta"], inference="auto")
    with torch.no_grad():
        next(get_shim(other.get_pipe("trf").model).hf_model.parameters()).mul_(1.01)
    monkeypatch.setattr(auto, "decide", lambda trials: "torch")
    rows(other)
    assert chosen(other).backend == "torch" and chosen(other).key != chosen(nlp).key
    assert len(json.loads(auto_cache.read_text())) == 2


def trials(**timed: tuple[float, float]) -> tuple[auto.Trial, ...]:
    return tuple(auto.Trial(name, seconds, cosine) for name, (seconds, cosine) in timed.items())


def test_auto_takes_the_fastest_backend_that_agrees_with_fp32() -> None:
    assert auto.decide(trials(torch=(1.0, 1.0), int8=(0.6, 0.985), bf16=(0.4, 0.9999))) == "bf16"
    # outputs too far from fp32 (or not finite), or too small a gain to give up exact outputs
    assert auto.decide(trials(torch=(1.0, 1.0), int8=(0.5, auto.MIN_COSINE - 0.01))) == "torch"
    assert auto.decide(trials(torch=(1.0, 1.0), int8=(0.5, float("nan")))) == "torch"
    assert auto.decide(trials(torch=(1.0, 1.0), int8=(0.95, 0.99))) == "torch"
    failed = auto.Trial("bf16", None, None, None, "ValueError: no bf16")
    assert auto.decide((*trials(torch=(1.0, 1.0), int8=(0.7, 0.98)), failed)) == "int8"
    # a classification head: the best label must agree too
    flips = auto.Trial("int8", 0.5, 0.995, top1=0.9)
    assert auto.decide((auto.Trial("torch", 1.0, 1.0, 1.0), flips)) == "torch"


def test_auto_compares_labels_for_heads_and_a_nan_output_never_agrees() -> None:
    inputs = {"input_ids": torch.ones(2, 4, dtype=torch.long)}
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat(4, 1).reshape(2, 4, 2)

    def run(out: torch.Tensor) -> Any:
        return lambda x: ([out.repeat(x["input_ids"].shape[0] // 2, 1, 1)], None)

    swapped = logits.flip(-1) * 0.1 + logits  # same direction, nearly; labels kept
    runs = {"torch": run(logits), "int8": run(swapped), "bf16": run(logits * float("nan"))}
    measured = {t.backend: t for t in auto.measure(runs, inputs, head=True)}
    assert measured["int8"].top1 == 1.0 and measured["torch"].top1 == 1.0
    assert not auto._agrees(measured["bf16"])


@pytest.mark.parametrize("native", [True, False])
def test_auto_never_tries_emulated_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(auto, "native_bf16", lambda: native)
    names = auto.candidates(torch.device("cpu"))
    assert names[:2] == ["torch", "int8"] and ("bf16" in names) == native


def test_auto_survives_a_broken_cache_and_a_failing_candidate(
    model_dirs: dict[str, str], auto_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auto_cache.write_text("{not json")
    monkeypatch.setattr(auto, "candidates", lambda device: ["torch", "int8"])

    def no_int8(model: torch.nn.Module) -> torch.nn.Module:
        raise RuntimeError("no fbgemm")

    monkeypatch.setattr(spacy_trf.encoder.backends, "quantize_int8", no_int8)
    nlp = make_nlp(model_dirs["roberta"], inference="auto")
    np.testing.assert_array_equal(rows(nlp), rows(make_nlp(model_dirs["roberta"])))
    choice = chosen(nlp)
    failed = next(t for t in choice.trials if t.backend == "int8")
    assert choice.backend == "torch" and failed.seconds is None and "no fbgemm" in str(failed.error)
    assert json.loads(auto_cache.read_text())[choice.key]["backend"] == "torch"  # rewritten


def test_auto_without_a_writable_cache_still_chooses(
    model_dirs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(choices.CACHE_ENV, str(blocked / "cache"))  # under a file: unwritable
    auto.forget_choices()
    nlp = make_nlp(model_dirs["roberta"], inference="auto")
    np.testing.assert_array_equal(
        rows(nlp), rows(make_nlp(model_dirs["roberta"], inference=chosen(nlp).backend))
    )
    auto.forget_choices()


def test_threads_predicting_at_once_measure_once(
    model_dirs: dict[str, str], auto_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    measure = auto.measure
    monkeypatch.setattr(auto, "measure", lambda *a: calls.append(1) or measure(*a))
    nlp = make_nlp(model_dirs["roberta"], inference="auto")
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(rows(nlp))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 4 and len(calls) == 1
    expected = rows(make_nlp(model_dirs["roberta"], inference=chosen(nlp).backend))
    for got in results:
        np.testing.assert_array_equal(got, expected)


def test_a_device_move_chooses_again_from_this_processs_choices(
    model_dirs: dict[str, str], auto_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nlp = make_nlp(model_dirs["roberta"], inference="auto")
    rows(nlp)
    backends = get_shim(nlp.get_pipe("trf").model).backends
    first = backends.chosen
    assert first is not None
    get_shim(nlp.get_pipe("trf").model).to_device("cpu", 0)
    assert backends.chosen is None  # the choice was for the old device
    monkeypatch.setattr(auto, "measure", lambda *a: pytest.fail("measured again"))
    rows(nlp)
    assert backends.chosen == first  # same machine key: found in this process


def test_int8_and_auto_run_fp32_under_mixed_precision_bf16(
    model_dirs: dict[str, str], auto_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forward_module, "native_bf16", lambda: True)  # bf16 autocast, emulated
    expected = rows(make_nlp(model_dirs["roberta"], inference="int8"))
    mixed = make_nlp(model_dirs["roberta"], inference="int8", mixed_precision=True)
    np.testing.assert_array_equal(rows(mixed), expected)
    monkeypatch.setattr(auto, "candidates", lambda device: ["torch", "int8"])
    nlp = make_nlp(model_dirs["roberta"], inference="auto", mixed_precision=True)
    rows(nlp)
    assert next(t for t in chosen(nlp).trials if t.backend == "torch").cosine == 1.0
    assert all(t.error is None for t in chosen(nlp).trials)
