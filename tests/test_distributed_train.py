"""Data-parallel training on Ray Train (spacy_trf.distributed.train): two workers take the
step one worker takes on the whole batch (gradients summed), a killed run resumes to the
weights of an uninterrupted one (with another worker count), the saved state round-trips, and
every worker sees its own slice of the same batches. Real local Ray clusters."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training.initialize import init_nlp
from spacy.util import load_config
from thinc.api import Adam, ConfigValidationError

pytest.importorskip("ray")

from spacy_trf.cli.init_config import make_config  # noqa: E402
from spacy_trf.distributed import train  # noqa: E402
from spacy_trf.distributed.loop import global_batches  # noqa: E402
from spacy_trf.distributed.params import trainable_params, unseen_class_nodes  # noqa: E402
from spacy_trf.distributed.state import TrainState, load_state, save_state  # noqa: E402

from .test_cli import annotated_docs  # noqa: E402

BIN = Path(sys.executable).parent
STEPS = 7  # spaCy's max_steps: steps 0..7


@pytest.fixture(scope="module")
def setup(model_dirs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tagger + textcat config on the tiny RoBERTa, without dropout (so that runs can agree to
    float precision), evaluating every 2 steps."""
    root = tmp_path_factory.mktemp("train-ray")
    docs = annotated_docs(spacy.blank("en").vocab)
    DocBin(docs=docs * 4).to_disk(root / "train.spacy")
    DocBin(docs=docs).to_disk(root / "dev.spacy")
    config = make_config(["tagger", "textcat"], model=model_dirs["roberta"], max_steps=STEPS)
    (root / "config.cfg").write_text(config.to_str())
    overrides = {
        "paths.train": str(root / "train.spacy"),
        "paths.dev": str(root / "dev.spacy"),
        "training.dropout": 0.0,
        "components.trf.model.transformer_config.hidden_dropout_prob": 0.0,
        "training.eval_frequency": 2,
        "training.accumulate_gradient": 1,
        "training.batcher.size": 40,
        "training.logger.progress_bar": False,
    }
    return {"root": root, "config": root / "config.cfg", "overrides": overrides}


@pytest.fixture(scope="module")
def one_worker(setup: dict[str, Any]) -> Path:
    out = setup["root"] / "one"
    train(setup["config"], out, workers=1, overrides=setup["overrides"])
    return out


def weights(pipeline: Path) -> list[np.ndarray]:
    nlp = spacy.load(pipeline)
    return [p.weight.numpy().copy() for p in trainable_params(nlp)]


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = weights(a), weights(b)
    assert len(wa) == len(wb) > 50  # the HF encoder's tensors and the heads'
    worst = max(float(np.abs(x - y).max()) for x, y in zip(wa, wb, strict=True))
    assert worst <= atol, worst


def test_two_workers_take_the_steps_of_one_worker_on_the_whole_batches(
    setup: dict[str, Any], one_worker: Path
) -> None:
    out = setup["root"] / "two"
    result = train(setup["config"], out, workers=2, overrides=setup["overrides"])
    assert result.steps == STEPS + 1 and result.best_score is not None
    assert_same_weights(one_worker / "model-last", out / "model-last")
    assert_same_weights(one_worker / "model-best", out / "model-best")
    # The weights moved: the comparison is not between two untouched copies.
    start = init_nlp(load_config(setup["config"], overrides=setup["overrides"]))
    moved = [p.weight.numpy() for p in trainable_params(start)]
    final = weights(out / "model-last")
    assert any(not np.allclose(x, y) for x, y in zip(moved, final, strict=True))
    meta = json.loads((out / "model-best" / "meta.json").read_text())["performance"]
    reference = json.loads((one_worker / "model-best" / "meta.json").read_text())["performance"]
    assert meta.keys() == reference.keys()  # scores, and the losses as one worker reports them
    for key, value in reference.items():
        expected = pytest.approx(value, rel=1e-5) if isinstance(value, float) else value
        assert meta[key] == expected, key
    assert spacy.load(out / "model-best")("Anna visited Berlin .").has_annotation("TAG")


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(
    setup: dict[str, Any], one_worker: Path
) -> None:
    out = setup["root"] / "killed"
    args = [f"--{k}={json.dumps(v)}" for k, v in setup["overrides"].items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen(
        [str(BIN / "spacy-trf"), "train-ray", str(setup["config"]), "-o", str(out), "-w", "2"]
        + args,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    snapshot = out / "train-ray" / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 240
    while time.time() < deadline and not snapshot.exists():
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)  # the driver and its local cluster, mid-run
    run.wait()
    latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["step"]
    assert 1 <= latest <= STEPS  # stopped before the end
    result = train(setup["config"], out, workers=1, overrides=setup["overrides"], resume=True)
    assert result.steps == STEPS + 1
    assert_same_weights(one_worker / "model-last", out / "model-last")
    assert_same_weights(one_worker / "model-best", out / "model-best")
    changed = {**setup["overrides"], "training.batcher.size": 30}
    with pytest.raises(ValueError, match="same config"):
        train(setup["config"], out, workers=1, overrides=changed, resume=True)


def test_state_round_trips_weights_optimizer_and_unseen_actions(
    setup: dict[str, Any], model_dirs: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "ner.cfg").write_text(make_config(["ner"], model=model_dirs["roberta"]).to_str())
    config = load_config(tmp_path / "ner.cfg", overrides=setup["overrides"])
    nlp = init_nlp(config)
    optimizer = Adam(0.001, use_averages=True)
    from spacy.training import Example

    examples = [Example(d.copy(), d) for d in annotated_docs(nlp.vocab)]
    for _ in range(2):
        nlp.update(examples, sgd=optimizer)
        optimizer.step_schedules()
    params, nodes = trainable_params(nlp), unseen_class_nodes(nlp)
    assert len(nodes) == 1  # ner
    nodes[0].attrs["unseen_classes"] = {1, 3}
    save_state(tmp_path, TrainState(step=2, results=[[0.5, 0]]), params, optimizer, nodes)
    fresh = init_nlp(config)
    fresh_optimizer = Adam(0.001, use_averages=True)
    fresh_params, fresh_nodes = trainable_params(fresh), unseen_class_nodes(fresh)
    state = load_state(tmp_path, fresh_params, fresh_optimizer, fresh_nodes)
    assert state.step == 2 and state.best == (0.5, 0)
    assert fresh_nodes[0].attrs["unseen_classes"] == {1, 3}
    for a, b in zip(params, fresh_params, strict=True):
        np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
        if a.key in optimizer.mom1:
            np.testing.assert_array_equal(optimizer.mom1[a.key], fresh_optimizer.mom1[b.key])
            assert optimizer.nr_update[a.key] == fresh_optimizer.nr_update[b.key]
    assert len(fresh_optimizer.mom1) == len(optimizer.mom1) > 40  # encoder and heads
    assert len(fresh_optimizer.averages) == len(optimizer.averages)
    fresh.update(examples, sgd=fresh_optimizer)  # the restored state can be written to


def test_workers_slice_the_same_batches(setup: dict[str, Any]) -> None:
    nlp = spacy.blank("en")
    docs = annotated_docs(nlp.vocab) * 3
    from spacy.training import Example

    examples = [Example(d.copy(), d) for d in docs]

    def corpus(_: Any) -> list:
        return examples

    def batcher(items: Any) -> Any:
        items = list(items)
        return [items[i : i + 5] for i in range(0, len(items), 5)]

    def run(rank: int, world: int, start: int = 0) -> list:
        batches = global_batches(
            nlp, corpus, batcher, max_epochs=2, seed=1, rank=rank, world=world, start=start
        )
        return list(batches)

    whole = run(0, 1)
    halves = [run(0, 2), run(1, 2)]
    assert len(halves[0]) == len(halves[1]) == len(whole)  # every worker takes every step
    for (step, epoch, batch, words), a, b in zip(whole, *halves, strict=True):
        assert a[0] == b[0] == step and a[1] == b[1] == epoch and a[3] == b[3] == words
        assert sorted(map(id, a[2] + b[2])) == sorted(map(id, batch))
    assert run(0, 1, start=3) == whole[3:]  # a resumed run continues with the same batches
    # A batch with fewer examples than workers leaves a worker an empty slice, not fewer steps.
    small = [b for _, _, b, _ in whole if len(b) < 5]
    last = run(4, 5)
    assert small and len(last) == len(whole)
    assert sum(not b for _, _, b, _ in last) == len(small)


def test_bad_arguments_fail_before_anything_is_written(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="No config file"):
        train(tmp_path / "nope.cfg", tmp_path / "out1")
    with pytest.raises(ValueError, match="workers"):
        train(setup["config"], tmp_path / "out2", workers=0)
    with pytest.raises(ValueError, match="GPUs per worker"):
        train(setup["config"], tmp_path / "out2", gpus_per_worker=0.5)
    with pytest.raises(FileNotFoundError, match="Nothing to resume"):
        train(setup["config"], tmp_path / "out3", resume=True, overrides=setup["overrides"])
    bad = {**setup["overrides"], "training.logger.progress_bar": "no"}
    with pytest.raises(ConfigValidationError, match="progress_bar"):
        train(setup["config"], tmp_path / "out4", overrides=bad)
    assert not any((tmp_path / f"out{i}").exists() for i in range(1, 5))


def _sum_on_two_workers(rank: int, store: str, results: Any) -> None:
    """Worker ``rank`` of 2: a Thinc layer and a torch shim; worker 1 has no gradient for the
    bias and sees action 2 (worker 0 action 1) of a parser-like node."""
    import torch
    import torch.distributed as dist
    from thinc.api import Linear, PyTorchWrapper, chain

    from spacy_trf.distributed.params import (
        Param,
        _model_params,
        all_reduce_gradients,
        sync_unseen_classes,
    )

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = chain(Linear(3, 2), PyTorchWrapper(torch.nn.Linear(256, 300)))
    model.initialize()
    model.attrs["unseen_classes"] = {0, 1, 2, 3}
    params: list[Param] = list(_model_params(model, set()))
    for i, p in enumerate(params):
        if p.tensor is not None:
            p.tensor.grad = torch.full_like(p.tensor, float(rank + 1))
        elif not (rank == 1 and p.name == "b"):
            p.set_grad(torch.full_like(p.weight, float(10 * (rank + 1) + i)))
    all_reduce_gradients(params, torch.device("cpu"))
    model.attrs["unseen_classes"].discard(rank + 1)
    sync_unseen_classes([model])
    results.put((rank, [p.grad.numpy().tolist() for p in params], model.attrs["unseen_classes"]))
    dist.destroy_process_group()


def test_gradients_are_summed_and_unseen_actions_merged_over_workers(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_sum_on_two_workers, args=(r, str(tmp_path / "store"), results))
        for r in (0, 1)
    ]
    for proc in procs:
        proc.start()
    got = {r: (g, u) for r, g, u in (results.get(timeout=120) for _ in procs)}
    for proc in procs:
        proc.join(timeout=60)
    assert got[0] == got[1]  # every worker ends with the same gradients and actions
    grads, unseen = got[0]
    assert unseen == {0, 3}
    thinc_w, thinc_b, torch_w, torch_b = (np.asarray(g) for g in grads)
    assert torch_w.shape == (300, 256) and np.all(torch_w == 1 + 2)  # large: in place
    assert np.all(torch_b == 1 + 2)  # small: through a flat buffer
    assert np.all(thinc_w == 10 + 20)
    assert np.all(thinc_b == 11)  # worker 1 had none: zeros there, and the sum on both
