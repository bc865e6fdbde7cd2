"""The training loop of one data-parallel worker: spaCy's loop, step for step, with the
gradients summed over the workers between the backward and the optimizer's step.

spaCy's ``train_while_improving`` cannot be reused as it is: it has no point between the
components' backward and their ``finish_update`` to sum the gradients at, and it always starts
at step 0 with no evaluation history, so a resumed run would evaluate, pick ``model-best`` and
stop for ``patience`` differently. This loop keeps its semantics (dropout schedule, gradient
accumulation, ``eval_frequency``, ``patience``, ``max_steps``, the logger's ``info``) and reuses
its pieces (``subdivide_batch``, the evaluation callback).

Every worker sees the same global batches (the configured batcher over the whole corpus,
shuffled by the seed) and trains on its slice ``batch[rank::world]``, so N workers take the
steps one worker takes on the whole batches, and a run can resume with another worker count.
"""

import random
from collections.abc import Callable, Iterable, Iterator
from timeit import default_timer as timer
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from spacy.language import Language
from spacy.pipeline import EntityLinker, TextCategorizer
from spacy.training import Example
from spacy.training.loop import subdivide_batch
from thinc.api import Optimizer, constant

from ..pipeline import Transformer
from .params import trained_components
from .state import TrainState

MEAN_LOSSES = (TextCategorizer, EntityLinker)

Batches = Iterator[tuple[int, int, list[Example], int]]
OnEvaluated = Callable[[dict[str, Any], bool], None]


def global_batches(
    nlp: Language,
    corpus: Callable[[Language], Iterable[Example]],
    batcher: Callable[[Iterable[Example]], Iterable[list[Example]]],
    *,
    max_epochs: int,
    seed: int,
    rank: int,
    world: int,
    start: int = 0,
) -> Batches:
    """(step, epoch, this worker's slice, words in the whole batch) from step ``start`` on.

    A slice can be empty (a batch with fewer examples than workers): the worker still takes
    part in the step. The corpus is read with random states of its own (seeded by ``seed``
    and the epoch), so that readers and augmenters that draw random numbers give every
    worker the same examples.
    """
    rng = random.Random(seed)
    examples: list[Example] = []
    if max_epochs >= 0:
        examples = list(_isolated(corpus(nlp), seed))
        if not examples:
            raise ValueError("The training corpus is empty: check [corpora.train] and its path.")
    step, epoch = 0, 0
    while max_epochs < 1 or epoch != max_epochs:
        epoch_examples: Iterable[Example] = examples
        if max_epochs >= 0:
            rng.shuffle(examples)
        else:  # a streamed corpus, read again each epoch
            epoch_examples = _isolated(corpus(nlp), seed + epoch)
        for batch in batcher(epoch_examples):
            if step >= start:
                yield step, epoch, batch[rank::world], sum(len(eg) for eg in batch)
            step += 1
        epoch += 1


def _isolated(items: Iterable[Example], seed: int) -> Iterator[Example]:
    """``items``, each drawn under Python's and numpy's random states of its own."""
    mine = (random.Random(seed).getstate(), np.random.RandomState(seed).get_state())
    iterator = iter(items)
    while True:
        theirs = (random.getstate(), np.random.get_state())
        random.setstate(mine[0])
        np.random.set_state(mine[1])
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            mine = (random.getstate(), np.random.get_state())
            random.setstate(theirs[0])
            np.random.set_state(theirs[1])
        yield item


def train_loop(
    nlp: Language,
    training: dict[str, Any],
    optimizer: Optimizer,
    batches: Batches,
    *,
    evaluate: Callable[[], tuple[float, dict[str, Any]]],
    sync: Callable[[], None],
    state: TrainState,
    on_evaluated: OnEvaluated,
    log_step: Callable[[dict[str, Any] | None], None],
    rank: int,
    device: torch.device,
) -> None:
    """Train from ``state`` on until ``patience`` or ``max_steps`` says stop (or the batches
    end); ``on_evaluated(info, is_best)`` after each evaluation, on every worker."""
    T = training
    dropout = T["dropout"]
    dropouts = cast(Iterator[float], constant(dropout) if isinstance(dropout, float) else dropout)
    for _ in range(state.step):
        next(dropouts)
    exclude, annotates = T["frozen_components"], T["annotating_components"]
    trainable = trained_components(nlp, exclude)
    encoders = [proc for proc in trainable if isinstance(proc, Transformer)]
    if _finished(T, state):  # a resumed run that had ended
        return
    losses: dict[str, float] = {}
    start = timer()
    for step, epoch, batch, words in batches:
        started = timer()
        if T["before_update"]:
            T["before_update"](nlp, {"step": step, "epoch": epoch})
        dropout = next(dropouts)
        for subbatch in subdivide_batch(batch, T["accumulate_gradient"]):
            nlp.update(
                subbatch,
                drop=dropout,
                losses=losses,
                sgd=False,  # type: ignore[arg-type]
                exclude=exclude,
                annotates=annotates,
            )
        for encoder in encoders:  # a backward still waiting for a listener runs now
            encoder.flush_gradients()
        synced = timer()
        sync()
        state.sync_seconds += timer() - synced
        for proc in trainable:
            proc.finish_update(optimizer)
        optimizer.step_schedules()
        state.step, state.epoch, state.words = step + 1, epoch, state.words + words
        state.seconds += timer() - started
        info: dict[str, Any] | None = None
        if not step % T["eval_frequency"]:
            with nlp.use_params(optimizer.averages):
                score, other_scores = _on_rank_zero(evaluate, rank)
            state.results.append([score, step])
            is_best = score == max(s for s, _ in state.results)
            info = {
                "epoch": epoch,
                "step": step,
                "score": score,
                "other_scores": other_scores,
                "losses": _total_losses(nlp, losses, device),
                "checkpoints": [tuple(r) for r in state.results],
                "seconds": int(timer() - start),
                "words": state.words,
            }
            on_evaluated(info, is_best)
            losses = {}
        log_step(info)
        if _finished(T, state):
            break


def _finished(T: dict[str, Any], state: TrainState) -> bool:
    """Whether ``patience`` or ``max_steps`` ends the run after its last step (as spaCy's)."""
    last, best = state.step - 1, state.best
    if last < 0:
        return False
    if best is not None and T["patience"] and last - best[1] >= T["patience"]:
        return True
    return bool(T["max_steps"]) and last >= T["max_steps"]


def _on_rank_zero(evaluate: Callable[[], tuple[float, dict[str, Any]]], rank: int) -> Any:
    """Evaluate on the first worker; every worker gets its scores (and so stops alike)."""
    result = [evaluate() if rank == 0 else None]
    dist.broadcast_object_list(result, src=0)
    return result[0]


def _total_losses(
    nlp: Language, losses: dict[str, float], device: torch.device
) -> dict[str, float]:
    """The losses since the last evaluation over all workers, as one worker on the whole
    batches would report them: summed, but averaged for the components whose loss spaCy
    reports as a mean over the batch (text classifiers, entity linker)."""
    names = [name for name, _ in nlp.pipeline]  # the same on every worker
    values = [losses.get(n, 0.0) for n in names] + [float(n in losses) for n in names]
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    sums, seen = total[: len(names)].tolist(), total[len(names) :].tolist()
    return {
        name: value / workers if isinstance(nlp.get_pipe(name), MEAN_LOSSES) else value
        for name, value, workers in zip(names, sums, seen, strict=True)
        if workers
    }
