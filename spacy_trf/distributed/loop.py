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

import torch
import torch.distributed as dist
from spacy.language import Language
from spacy.pipeline import TextCategorizer
from spacy.training import Example
from spacy.training.loop import subdivide_batch
from thinc.api import Optimizer, constant

from .state import TrainState

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

    Batches with fewer examples than workers are skipped on every worker alike (each worker
    must take part in every step).
    """
    rng = random.Random(seed)
    examples: list[Example] = []
    if max_epochs >= 0:
        examples = list(corpus(nlp))
        if not examples:
            raise ValueError("The training corpus is empty: check [corpora.train] and its path.")
    step, epoch = 0, 0
    while max_epochs < 1 or epoch != max_epochs:
        epoch_examples: Iterable[Example] = examples
        if max_epochs >= 0:
            rng.shuffle(examples)
        else:  # a streamed corpus, read again each epoch
            epoch_examples = corpus(nlp)
        for batch in batcher(epoch_examples):
            if len(batch) < world:
                continue
            if step >= start:
                yield step, epoch, batch[rank::world], sum(len(eg) for eg in batch)
            step += 1
        epoch += 1


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
    trainable: list[Any] = [
        proc
        for name, proc in nlp.pipeline
        if name not in exclude
        and getattr(proc, "is_trainable", False)
        and getattr(proc, "model", None) not in (True, False, None)
    ]
    if _finished(T, state):  # a resumed run that had ended
        return
    losses: dict[str, float] = {}
    start = timer()
    for step, epoch, batch, words in batches:
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
        sync()
        for proc in trainable:
            proc.finish_update(optimizer)
        optimizer.step_schedules()
        state.step, state.epoch, state.words = step + 1, epoch, state.words + words
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
    batches would report them: summed, but averaged for the text classifiers, whose loss
    spaCy reports as a mean over the batch."""
    names = [n for n in nlp.pipe_names if n in losses]
    total = torch.tensor([float(losses[n]) for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    world = dist.get_world_size()
    return {
        name: value / world if isinstance(nlp.get_pipe(name), TextCategorizer) else value
        for name, value in zip(names, total.tolist(), strict=True)
    }
