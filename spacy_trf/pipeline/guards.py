"""What stops the training of a component that owns a Hugging Face model with one clear error:
an empty corpus at initialize, and the first step whose loss or gradient is not finite (before
it reaches the weights)."""

import math
from collections.abc import Callable, Iterable

from spacy.training import Example

from ..encoder import HFShim


def check_corpus(name: str, get_examples: Callable[[], Iterable[Example]] | None) -> None:
    """Raise if ``initialize`` was given a corpus without a single example."""
    if get_examples is not None and next(iter(get_examples()), None) is None:
        raise ValueError(
            f"'{name}' got no training examples at initialize: the training corpus is empty. "
            "Point [paths.train] (or [corpora.train]) at a .spacy file with docs in it "
            "(len(DocBin().from_disk(path)) counts them)."
        )


class NonFiniteLossError(FloatingPointError):
    """A training step's loss or encoder gradient was nan or inf."""


class TrainingSteps:
    """The optimizer steps of component ``name`` in this process, and the losses of the update
    in flight (``nlp.update``'s dict: it holds every component's loss)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self._losses: dict[str, float] = {}

    def watch(self, losses: dict[str, float]) -> None:
        """Note the losses dict of the current ``update``."""
        self._losses = losses

    def check(self, shim: HFShim, sources: list[str] | None = None) -> None:
        """Count a step; raise before it updates any weight if a loss or gradient is not
        finite. ``sources``: the components whose losses the gradient comes from (listeners).
        fp16 loss scaling skips overflowing steps itself, so its gradients pass."""
        self.count += 1
        own = {self.name, *(sources or [])}
        bad = {k: v for k, v in self._losses.items() if k in own and not math.isfinite(v)}
        if not bad and (shim.loss_scaling or shim.gradients_finite()):
            return
        shim.drop_gradients()  # a caller that catches the error can go on with finite steps
        if bad:
            what = "the loss of " + ", ".join(f"'{k}' is {v}" for k, v in sorted(bad.items()))
        else:
            what = f"the gradient of '{self.name}''s transformer has nan or inf values"
            if sources:
                what += " (from the losses of " + ", ".join(f"'{s}'" for s in sources) + ")"
        raise NonFiniteLossError(
            f"Training stopped at step {self.count - 1} of '{self.name}' in this process (counted "
            f"from 0, as spaCy's training log counts): {what}, so the step would write nan into "
            "its transformer's weights (they were left as they were). Lower "
            "[training.optimizer.learn_rate], clip gradients with [training.optimizer.grad_clip] "
            "(e.g. 1.0), and check the examples of that batch for bad annotations."
        )
