"""``train``: ``spacy train``, data-parallel on Ray Train.

``TorchTrainer`` starts one worker per ``workers`` (gloo on CPU, NCCL on GPU). Each worker
builds the pipeline from the config (``init_nlp``), takes the weights of worker 0, and runs
the loop of loop.py on its slice of every batch; the gradients of all trainable parameters
(HF encoder and Thinc heads) are summed over the workers before each optimizer step, so the
weights stay equal everywhere. Worker 0 evaluates, logs spaCy's table and, at every
evaluation, reports a checkpoint (``model-last``, ``model-best`` and the training state)
through ``ray.train.report``; the driver copies ``model-best`` / ``model-last`` into the
output directory. ``resume=True`` continues from the last checkpoint of the run.
"""

import hashlib
import json
import logging
import os
import pickle
import shutil
import sys
from collections.abc import Callable
from contextlib import nullcontext, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow.fs
import ray.train
import spacy
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from spacy.language import Language
from spacy.schemas import ConfigSchemaTraining
from spacy.training.initialize import init_nlp
from spacy.training.loop import (
    DIR_MODEL_BEST,
    DIR_MODEL_LAST,
    create_evaluation_callback,
)
from spacy.util import load_config, load_model_from_config, registry, resolve_dot_names
from spacy.util import logger as spacy_logger
from thinc.api import Config, Optimizer, fix_random_seed, require_gpu

from ..encoder import HFShim
from .checkpoints import Checkpoints, PublishCheckpoints, check_same_config, publish
from .cluster import connect
from .loop import global_batches, train_loop
from .params import (
    Param,
    all_reduce_gradients,
    broadcast_weights,
    sync_unseen_classes,
    trainable_params,
    unseen_class_nodes,
)
from .state import STATE_JSON, TrainState

RUN = "train-ray"  # Ray's run folder (the checkpoints) under the storage path
COLLECTIVE_TIMEOUT = 7200  # seconds


@dataclass
class TrainResult:
    """A finished run: where its pipelines are and how far it got.

    steps (int): Steps taken; words (int): words trained on, by all workers together.
    best_score (float | None): The best weighted dev score (model-best's).
    seconds (float): Time in the training steps (all sessions of a resumed run together;
        evaluations and checkpoints left out), sync_seconds of it summing gradients.
    """

    output: Path
    steps: int
    words: int
    best_score: float | None
    seconds: float
    sync_seconds: float


def train(
    config: str | Path,
    output: str | Path,
    *,
    workers: int = 2,
    threads_per_worker: int = 1,
    gpus_per_worker: float = 0,
    overrides: dict[str, Any] | None = None,
    address: str | None = None,
    resume: bool = False,
    storage: str | None = None,
    code: str | Path | None = None,
    max_failures: int = 0,
) -> TrainResult:
    """Train the pipeline of ``config`` on ``workers`` Ray Train workers into ``output``.

    workers (int): Data-parallel workers; each trains on its slice of every batch, so a batch
        of the config's batcher is split over them (the same steps as one worker takes).
    threads_per_worker (int): torch threads (and Ray CPUs) per worker.
    gpus_per_worker (float): GPUs per worker (0: CPU, gloo; otherwise NCCL).
    overrides (dict | None): Config overrides, as ``spacy train``'s ``--paths.train ...``.
    address (str | None): An existing Ray cluster; default: a local one.
    resume (bool): Continue from the run's last checkpoint (same config; any worker count).
    storage (str | None): Where Ray keeps the checkpoints (default: ``output``); on several
        nodes a path all of them share (NFS, ``s3://...``).
    code (str | Path | None): A Python file with custom registered functions (spaCy's --code).
    max_failures (int): Restarts of the worker group from the last checkpoint after a worker
        or node dies.
    """
    output = Path(output).resolve()
    _check_args(config, workers, threads_per_worker, gpus_per_worker, code, max_failures)
    if code:
        spacy.util.import_file("spacy_trf_user_code", str(code))
    text = _validated_config(config, overrides or {})
    digest = hashlib.sha256(text.encode("utf8")).hexdigest()
    storage_path, name = _run_location(output, storage)
    _prepare_output(output, storage_path, name, resume, digest)
    # Ray Train's per-report INFO lines (and, without a dashboard, its state-API warnings every
    # second) would bury spaCy's table; its print patch would print every line twice.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    started = connect(address, workers * threads_per_worker, workers * gpus_per_worker, "ERROR")
    try:
        trainer = _trainer(
            {
                "config": text,
                "digest": digest,
                "threads": threads_per_worker,
                "gpu": gpus_per_worker > 0,
                "code": str(Path(code).resolve()) if code else None,
            },
            workers,
            gpus_per_worker,
            RunConfig(
                name=name,
                storage_path=storage_path,
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                failure_config=FailureConfig(max_failures=max_failures),
                callbacks=[cast(Any, PublishCheckpoints(output))],
            ),
        )
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise RuntimeError(f"Training failed: {err}") from err
    finally:
        if started:
            ray.shutdown()
    if result.checkpoint is None:
        raise RuntimeError("Training ended without a checkpoint.")
    state = publish(result.checkpoint, output)
    best = state.best
    return TrainResult(
        output,
        state.step,
        state.words,
        best[0] if best else None,
        state.seconds,
        state.sync_seconds,
    )


def _trainer(
    loop_config: dict[str, Any], workers: int, gpus: float, run: RunConfig
) -> TorchTrainer:
    """Ray Train's trainer: ``workers`` workers of ``loop_config["threads"]`` CPUs (and a GPU
    each with ``gpus``). Worker 0 evaluates while the others wait in a collective: the
    timeout leaves two hours for an evaluation."""
    resources = {"CPU": loop_config["threads"]} | ({"GPU": gpus} if gpus else {})
    return TorchTrainer(
        _worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo", timeout_s=COLLECTIVE_TIMEOUT),
        run_config=run,
    )


def _validated_config(path: str | Path, overrides: dict[str, Any]) -> str:
    """The config with its overrides, as text, once spaCy has checked its pipeline, training
    settings and corpora here (a worker's config error reaches the driver less clearly)."""
    config = load_config(path, overrides=overrides, interpolate=False)
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    filled = nlp.config.interpolate()
    T = registry.resolve(filled["training"], schema=ConfigSchemaTraining)
    resolve_dot_names(filled, [T["train_corpus"], T["dev_corpus"]])
    return config.to_str()


def _worker(cfg: dict[str, Any]) -> None:
    """One Ray Train worker; errors that Ray cannot send back whole go as their message."""
    try:
        _train_worker(cfg)
    except Exception as err:
        try:
            pickle.loads(pickle.dumps(err))
        except Exception:
            raise RuntimeError(f"{type(err).__name__}: {err}") from None
        raise


def _train_worker(cfg: dict[str, Any]) -> None:
    """One Ray Train worker: build, synchronise, train, checkpoint."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    _quiet_ray_train()
    spacy_logger.propagate = False  # printed once, by spaCy's own handler
    spacy_logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    torch.set_num_threads(cfg["threads"])
    if cfg["code"]:
        spacy.util.import_file("spacy_trf_user_code", cfg["code"])
    device, use_gpu = torch.device("cpu"), -1
    if cfg["gpu"]:
        device = ray.train.torch.get_device()
        use_gpu = device.index or 0
        require_gpu(use_gpu)
    with open(os.devnull, "w") as devnull, redirect_stdout(devnull) if rank else nullcontext():
        nlp = init_nlp(Config().from_str(cfg["config"]), use_gpu=use_gpu)
    config = nlp.config.interpolate()
    T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    optimizer: Optimizer = T["optimizer"]
    params = trainable_params(nlp, T["frozen_components"])
    class_nodes = unseen_class_nodes(nlp, T["frozen_components"])
    _check_precision(params)
    checkpoints = Checkpoints(nlp, T, params, optimizer, class_nodes, rank)
    state = checkpoints.restore(ray.train.get_checkpoint(), cfg["digest"])
    broadcast_weights(params, device)
    # Dropout masks of their own per worker and session (the batches have their own seed).
    fix_random_seed(((T["seed"] or 0) * 1_000_003 + rank * 7_919 + state.step) % 2**32)

    def sync() -> None:
        all_reduce_gradients(params, device)
        sync_unseen_classes(class_nodes)

    log_step, finalize = _logger(nlp, T, optimizer, rank)
    try:
        train_loop(
            nlp,
            T,
            optimizer,
            global_batches(
                nlp,
                train_corpus,
                T["batcher"],
                max_epochs=T["max_epochs"],
                seed=T["seed"] or 0,
                rank=rank,
                world=world,
                start=state.step,
            ),
            evaluate=create_evaluation_callback(nlp, dev_corpus, T["score_weights"]),
            sync=sync,
            state=state,
            on_evaluated=checkpoints.report,
            log_step=log_step,
            rank=rank,
            device=device,
        )
        checkpoints.finish()
    finally:
        finalize()
        checkpoints.close()


LogStep = Callable[[dict[str, Any] | None], None]


def _logger(
    nlp: Language, T: dict[str, Any], optimizer: Optimizer, rank: int
) -> tuple[LogStep, Callable[[], None]]:
    """spaCy's configured logger on worker 0 (its console table); nothing elsewhere."""
    if rank != 0:
        return (lambda info: None), (lambda: None)
    print(f"Pipeline: {nlp.pipe_names}\nInitial learn rate: {optimizer.learn_rate}", flush=True)
    with nlp.select_pipes(disable=T["frozen_components"]):
        return T["logger"](nlp, sys.stdout, sys.stderr)


def _quiet_ray_train() -> None:
    """Ray Train logs a line per report and checkpoint; spaCy's table says it all."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # this one is named by its file path
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def _check_precision(params: list[Param]) -> None:
    for p in params:
        if isinstance(p.shim, HFShim) and p.shim.loss_scaling:
            raise ValueError(
                "train-ray does not support fp16 loss scaling (mixed_precision on a GPU without "
                "bf16): use a GPU with bf16 or set mixed_precision = false."
            )


def _run_location(output: Path, storage: str | None) -> tuple[str, str]:
    """Ray's storage path and run name: ``OUTPUT/train-ray`` by default; under a shared
    ``storage``, a run named after the output directory."""
    if storage is None:
        return str(output), RUN
    local = "://" not in storage
    return (str(Path(storage).resolve()) if local else storage), f"{RUN}-{output.name}"


def _prepare_output(output: Path, storage: str, name: str, resume: bool, digest: str) -> None:
    """A new run starts clean (as ``spacy train`` replaces model-best/model-last), but never
    deletes a run on remote storage; a resumed one needs its checkpoints, from the same
    config."""
    fs, base = pyarrow.fs.FileSystem.from_uri(storage)
    run = f"{base.rstrip('/')}/{name}"
    snapshot = f"{run}/checkpoint_manager_snapshot.json"
    exists = fs.get_file_info(snapshot).type != pyarrow.fs.FileType.NotFound
    if resume:
        if not exists:
            raise FileNotFoundError(
                f"Nothing to resume: no checkpoints at {storage}/{name}. Train without --resume."
            )
        try:
            with fs.open_input_stream(snapshot) as f:
                latest = json.loads(f.read())["latest_checkpoint_result"]
            if latest is not None:
                with fs.open_input_stream(
                    f"{run}/{latest['checkpoint_dir_name']}/{STATE_JSON}"
                ) as f:
                    state = TrainState.from_json(f.read())
                check_same_config(state, digest)
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(
                f"Cannot resume from {storage}/{name}: its last checkpoint is unreadable ({err}). "
                "Train without --resume, or into a new output directory."
            ) from err
        return
    if exists and "://" in storage:
        raise ValueError(
            f"{storage}/{name} holds a run: add --resume to continue it, or choose another "
            "output directory (the run is named after it) or --storage."
        )
    shutil.rmtree(Path(run), ignore_errors=True)
    for folder in (DIR_MODEL_BEST, DIR_MODEL_LAST):
        shutil.rmtree(output / folder, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)


def _check_args(
    config: str | Path,
    workers: int,
    threads: int,
    gpus: float,
    code: str | Path | None,
    max_failures: int,
) -> None:
    if not Path(config).is_file():
        raise FileNotFoundError(f"No config file at '{config}' (spacy-trf init-config writes one).")
    for name, value in (("workers", workers), ("threads per worker", threads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if gpus not in (0, 1):
        raise ValueError(
            f"GPUs per worker must be 0 (CPU) or 1 (each worker on its own GPU), got {gpus!r}."
        )
    if not isinstance(max_failures, int) or max_failures < 0:
        raise ValueError(f"max failures must be an integer >= 0, got {max_failures!r}.")
    if code is not None and not Path(code).is_file():
        raise FileNotFoundError(f"No Python file at '{code}' (--code).")
