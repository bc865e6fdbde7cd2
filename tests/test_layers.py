"""Thinc-level layers: pre-split words -> pieces -> encoder -> one row (or tag) per word."""

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc
from thinc.api import Adam, Config, SequenceCategoricalCrossentropy, reduce_mean, registry

from spacy_trf.encoder import get_shim
from spacy_trf.layers import TransformerEncoder, TransformersTagger, TransformerTokenizer

SENTENCES = [
    ["Tokenizers", "split", "unbelievably", "long", "words", "into", "pieces", "."],
    ["Short", "one"],
    [],
    ["Ünïcödé", "and", "3.14", "don't", "vanish", "!"],
]


def count_forward(module: torch.nn.Module) -> list[int]:
    """One entry per call of the module's forward."""
    calls: list[int] = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def encoder_pair(path: str, **window: int) -> tuple:
    tok = TransformerTokenizer(path, **window)
    enc = TransformerEncoder(path, reduce_mean())
    tok.initialize()
    enc.initialize()
    return tok, enc


def test_piece_batch_maps_every_word_to_its_pieces(model_dirs: dict[str, str], family: str) -> None:
    tok = TransformerTokenizer(model_dirs[family])
    tok.initialize()
    batch = tok.predict(SENTENCES)
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.token_type_ids.shape
    assert len(batch.word_pieces) == len(SENTENCES)
    n_windows = len(batch.plan.starts)
    assert batch.input_ids.shape[0] == n_windows == 3  # the empty sentence has no window
    for words, align, seq in zip(SENTENCES, batch.word_pieces, batch.plan.pieces, strict=True):
        assert len(align.lengths) == len(words)
        assert (np.asarray(align.lengths) >= 1).all()  # no word is invisible
        # Pieces belong to words in order; only pure-space pieces (a lone "Ġ") belong to none.
        covered = np.asarray(align.dataXd)
        assert (np.diff(covered) >= 0).all()
        for i in sorted(set(range(len(seq.ids))) - set(covered.tolist())):
            assert tok.shims[0].pieces.hf_tokenizer.decode([int(seq.ids[i])]).strip() == ""
    # Padding is masked out; content and special tokens are not.
    lengths = batch.attention_mask.sum(1)
    n_pieces = [len(p.ids) for p in batch.plan.pieces if len(p.ids)]
    assert sorted(lengths.tolist()) == sorted(n + batch.n_special for n in n_pieces)


def test_encoder_rows_equal_the_pipeline_component(
    nlp_factory: Callable[..., spacy.Language], model_dirs: dict[str, str], family: str
) -> None:
    """Same pieces, windows, stitching and pooling as the trf component, one row per word."""
    window = {"window": 8, "stride": 6}  # long sentences span several overlapping windows
    nlp = nlp_factory(family, model=window)
    tok, enc = encoder_pair(model_dirs[family], **window)
    rows = enc.predict(tok.predict(SENTENCES))
    width = get_shim(enc.layers[0]).hf_model.config.hidden_size
    assert [r.shape for r in rows] == [(len(words), width) for words in SENTENCES]
    for words, got in zip(SENTENCES, rows, strict=True):
        if not words:
            continue
        out = nlp(Doc(nlp.vocab, words=words))._.trf
        want = np.stack(
            [out.last_hidden_state[out.token_pieces(i)].mean(0) for i in range(len(words))]
        )
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_encoder_gradient_matches_autograd(model_dirs: dict[str, str]) -> None:
    """d(sum(rows * dY)) reaches the HF weights exactly as plain autograd over overlapping
    windows averaged per piece, then pieces averaged per word."""
    path = model_dirs["bert"]
    tok = TransformerTokenizer(path, window=8, stride=6)
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    enc = TransformerEncoder(path, reduce_mean(), transformer_config=no_dropout)
    tok.initialize()
    enc.initialize()
    hf = get_shim(enc.layers[0]).hf_model
    batch = tok.predict(SENTENCES)
    assert len(batch.plan.starts) > len(SENTENCES)  # some pieces are in two windows
    rows, backprop = enc.begin_update(batch)
    rng = np.random.default_rng(0)
    d_rows = [rng.normal(size=r.shape).astype("f") for r in rows]
    backprop(d_rows)
    got = hf.embeddings.word_embeddings.weight.grad.clone()
    hf.zero_grad()
    loss = torch.zeros(())
    plan = batch.plan
    for i, (seq, d) in enumerate(zip(plan.pieces, d_rows, strict=True)):
        if not len(seq.ids):
            continue
        first = int(plan.doc_piece_start[i])
        ids = torch.from_numpy(seq.ids)
        total, count = torch.zeros((len(ids), hf.config.hidden_size)), torch.zeros(len(ids))
        wa, wb = int(plan.doc_window_start[i]), int(plan.doc_window_start[i + 1])
        for start, end in zip(plan.starts[wa:wb] - first, plan.ends[wa:wb] - first, strict=True):
            window = torch.cat([torch.tensor([101]), ids[start:end], torch.tensor([102])])
            total[start:end] += hf(window[None]).last_hidden_state[0, 1:-1]
            count[start:end] += 1
        hidden = total / count[:, None]
        lengths = np.asarray(seq.align.lengths).tolist()
        index = torch.from_numpy(np.asarray(seq.align.dataXd)).long()
        pooled = torch.stack([w.mean(0) for w in torch.split(hidden[index], lengths)])
        loss = loss + (pooled * torch.from_numpy(d)).sum()
    loss.backward()
    want = hf.embeddings.word_embeddings.weight.grad
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_empty_input_gives_empty_rows_without_a_model_call(model_dirs: dict[str, str]) -> None:
    tok, enc = encoder_pair(model_dirs["bert"])
    calls = count_forward(get_shim(enc.layers[0]).hf_model)
    assert enc.predict(tok.predict([])) == []
    rows, backprop = enc.begin_update(tok.predict([[], []]))
    assert [r.shape for r in rows] == [(0, 384), (0, 384)]
    backprop(rows)
    assert calls == []


def test_tagger_learns_and_reloads_without_the_original_files(
    model_dirs: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "encoder"
    shutil.copytree(model_dirs["roberta"], src)
    words = [["the", "cat", "sat"], ["a", "dog", "ran", "far"], ["dogs", "sat"]]
    tags = [np.array(t, dtype="i") for t in ([0, 1, 2], [0, 1, 2, 3], [1, 2])]
    model = TransformersTagger(str(src), n_tags=4)
    model.initialize(X=words)
    loss_fn = SequenceCategoricalCrossentropy()
    optimizer = Adam(5e-3)
    losses = []
    for _ in range(20):
        guesses, backprop = model.begin_update(words)
        d_guesses, loss = loss_fn(guesses, [np.eye(4, dtype="f")[t] for t in tags])
        backprop(d_guesses)
        model.finish_update(optimizer)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert [g.shape for g in model.predict(words)] == [(3, 4), (4, 4), (2, 4)]
    model.to_disk(tmp_path / "tagger")
    shutil.rmtree(src)  # the saved model carries its own weights and tokenizer
    loaded = TransformersTagger(str(src), n_tags=4).from_disk(tmp_path / "tagger")
    for a, b in zip(model.predict(words), loaded.predict(words), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_layers_resolve_from_a_thinc_config_through_entry_points(
    model_dirs: dict[str, str],
) -> None:
    """A fresh interpreter that imports only Thinc finds the layers (thinc_layers entry points)."""
    code = (
        "from thinc.api import Config, registry\n"
        f'cfg = Config().from_str(\'[model]\\n@layers = "spacy-trf.TransformersTagger.v1"\\n'
        f'starter = "{model_dirs["bert"]}"\\nn_tags = 17\')\n'
        "model = registry.resolve(cfg)['model']\n"
        "print(model.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "spacy-trf.TransformerTokenizer" in out.stdout


def test_clear_errors(model_dirs: dict[str, str]) -> None:
    path = model_dirs["bert"]
    with pytest.raises(ValueError, match="initialize"):
        TransformerTokenizer(path).predict([["hi"]])
    with pytest.raises(ValueError, match="word lists"):
        tok = TransformerTokenizer(path)
        tok.initialize()
        tok.predict(["not", "split"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="stride"):
        TransformerTokenizer(path, window=8, stride=9)
    with pytest.raises(ValueError, match="stride"):
        tok = TransformerTokenizer(path, stride=600)  # beyond the default window (510)
        tok.initialize()
        tok.predict([["hi"]])
    with pytest.raises(ValueError, match="n_tags"):
        TransformersTagger(path, n_tags=0)
    tok, enc = TransformerTokenizer(path, window=600), TransformerEncoder(path, reduce_mean())
    tok.initialize()
    enc.initialize()
    with pytest.raises(ValueError, match="Set window <= 510"):
        enc.predict(tok.predict([["word"] * 700]))


def test_config_values_reach_the_layers(model_dirs: dict[str, str]) -> None:
    cfg = Config().from_str(
        f"""
        [model]
        @layers = "spacy-trf.TransformerTokenizer.v1"
        name = "{model_dirs["bert"]}"
        window = 16
        stride = 12
        """
    )
    tok = registry.resolve(cfg)["model"]
    tok.initialize()
    batch = tok.predict([["word"] * 40])
    assert batch.input_ids.shape[1] == 16 + batch.n_special
    assert len(batch.plan.starts) == 3  # starts 0, 12 and 24: the last ends on piece 40
