"""Checkpoints of a data-parallel training run: worker 0 saves ``model-last``, ``model-best``
and the training state (state.py) at every evaluation and reports them with
``ray.train.report``; a resumed run starts from the last one; on the driver's side each
reported checkpoint's pipelines are copied into the output directory."""

import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import ray.train
from ray.train import Checkpoint
from ray.train.v2.api.callback import UserCallback
from spacy.language import Language
from spacy.training.loop import (
    DIR_MODEL_BEST,
    DIR_MODEL_LAST,
    create_before_to_disk_callback,
    update_meta,
)
from thinc.api import Model, Optimizer

from ..files import replace_dir
from .params import Param
from .state import TrainState, load_state, save_state


class Checkpoints:
    """A worker's side of the checkpoints. Every worker reports alike (``ray.train.report``
    waits for all); worker 0 saves and sends the files.

    params, optimizer, class_nodes: What the training state holds (state.py).
    """

    def __init__(
        self,
        nlp: Language,
        training: dict[str, Any],
        params: list[Param],
        optimizer: Optimizer,
        class_nodes: list[Model],
        rank: int,
    ) -> None:
        self.nlp, self.T, self.params, self.optimizer = nlp, training, params, optimizer
        self.class_nodes, self.rank = class_nodes, rank
        self.before_to_disk = create_before_to_disk_callback(training["before_to_disk"])
        # worker 0's pipelines between reports
        self.work = Path(tempfile.mkdtemp(prefix="spacy-trf-train-")) if rank == 0 else None
        self.state = TrainState()
        self.reported = 0  # the step of the last report

    def restore(self, checkpoint: Checkpoint | None, digest: str) -> TrainState:
        """The state to start from: new, or the checkpoint's (weights, optimizer and the
        parsers' unseen actions restored)."""
        self.state = TrainState(config=digest)
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                path = Path(folder)
                check_same_config(TrainState.read(path), digest)
                self.state = load_state(path, self.params, self.optimizer, self.class_nodes)
                if self.work is not None and (path / DIR_MODEL_BEST).is_dir():
                    shutil.copytree(path / DIR_MODEL_BEST, self.work / DIR_MODEL_BEST)
        self.reported = self.state.step
        return self.state

    def report(self, info: dict[str, Any] | None, is_best: bool) -> None:
        """After an evaluation (``info``, spaCy's) or at the end (None)."""
        state = self.state
        self.reported = state.step
        metrics = {"step": state.step, "epoch": state.epoch, "words": state.words}
        if info is not None:
            metrics["score"] = info["score"]
        if self.work is None:
            ray.train.report(metrics, checkpoint=None)
            return
        nlp, last, best = self.nlp, self.work / DIR_MODEL_LAST, self.work / DIR_MODEL_BEST
        if info is not None:
            with nlp.select_pipes(disable=self.T["frozen_components"]):
                update_meta(self.T, nlp, info)
        shutil.rmtree(last, ignore_errors=True)
        with nlp.use_params(self.optimizer.averages):
            self.before_to_disk(nlp).to_disk(last)
        if is_best:
            shutil.rmtree(best, ignore_errors=True)
            shutil.copytree(last, best)
        folder = self.work / f"checkpoint-{state.step}"
        for model in (last, best):
            if model.is_dir():  # hard links: Ray copies the files to storage
                shutil.copytree(model, folder / model.name, copy_function=os.link)
        save_state(folder, state, self.params, self.optimizer, self.class_nodes)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        shutil.rmtree(folder, ignore_errors=True)

    def finish(self) -> None:
        """Report the steps since the last evaluation, as spaCy saves model-last at the end."""
        if self.reported != self.state.step:
            self.report(None, False)

    def close(self) -> None:
        """Remove the pipelines kept between reports."""
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)


class PublishCheckpoints(UserCallback):
    """Copies each reported checkpoint's pipelines into the output directory (runs on the
    Ray Train controller)."""

    def __init__(self, output: Path) -> None:
        self.output = output

    def after_report(self, run_context: Any, metrics: Any, checkpoint: Checkpoint | None) -> None:
        if checkpoint is not None:
            publish(checkpoint, self.output)


def _copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target, dirs_exist_ok=True)


def publish(checkpoint: Checkpoint, output: Path) -> TrainState:
    """Replace ``model-best`` / ``model-last`` in ``output`` by the checkpoint's, each whole;
    return the checkpoint's progress."""
    with checkpoint.as_directory() as path:
        for name in (DIR_MODEL_LAST, DIR_MODEL_BEST):
            source, target = Path(path) / name, output / name
            if not source.is_dir():
                continue
            replace_dir(target, partial(_copy, source))
        return TrainState.read(Path(path))


def check_same_config(state: TrainState, digest: str) -> None:
    """A run resumes only with the config (and overrides) it started with."""
    if state.config != digest:
        raise ValueError(
            "The config (or its overrides) differs from the stopped run's: resume with the "
            "same config, or train into a new output directory."
        )
