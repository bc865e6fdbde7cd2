"""Gradient bookkeeping of the ``trf`` component while training: the encoder runs once per batch,
every listener sends its gradient back, and one backward runs when all have arrived."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thinc.api import Optimizer

from ..stitch import DocTransformerGradient, add_gradients

Accumulate = Callable[[list[DocTransformerGradient]], list]


@dataclass
class _Pending:
    """A training batch whose encoder backward waits for its listeners' gradients."""

    backprop: Callable[[list[DocTransformerGradient]], Any]
    grads: list[DocTransformerGradient | None]
    expected: int
    sgd: Optimizer | None
    received: int = 0
    done: bool = False


class BatchGradients:
    """The listeners' gradients for the training batch in flight.

    step (Callable[[Optimizer], None]): Updates the weights; called once a batch's backward ran
        and an optimizer is known (given to ``start`` or to ``defer_step``).
    """

    def __init__(self, component: str, step: Callable[[Optimizer], None]) -> None:
        self.component = component
        self.step = step
        self.has_gradient = False  # a backward ran since the last step
        self._pending: _Pending | None = None

    def start(
        self,
        backprop: Callable[[list[DocTransformerGradient]], Any],
        n_docs: int,
        n_listeners: int,
        sgd: Optimizer | None,
    ) -> Accumulate:
        """Begin a batch (flushing any earlier one); return the callback listeners send to."""
        self.flush()
        pending = _Pending(backprop, [None] * n_docs, n_listeners, sgd)
        self._pending = pending

        def accumulate(d_outputs: list[DocTransformerGradient]) -> list:
            self._accumulate(pending, d_outputs)
            return []

        return accumulate

    def defer_step(self, sgd: Optimizer) -> bool:
        """If no listener has sent its gradient yet, keep ``sgd`` for the step after the batch's
        backward and return True (nlp.update calls finish_update before the listeners' backprop)."""
        pending = self._pending
        if pending is not None and not pending.done and pending.received == 0:
            pending.sgd = sgd
            return True
        return False

    def _accumulate(self, pending: _Pending, d_outputs: list[DocTransformerGradient]) -> None:
        if pending.done:
            raise RuntimeError(
                f"A listener of '{self.component}' sent its gradient after the encoder's backward "
                "ran for that batch: call each listener's backprop before finish_update."
            )
        if len(d_outputs) != len(pending.grads):
            raise ValueError(
                f"A listener sent gradients for {len(d_outputs)} docs; the batch has "
                f"{len(pending.grads)}."
            )
        pending.grads = [add_gradients(a, b) for a, b in zip(pending.grads, d_outputs, strict=True)]
        pending.received += 1
        if pending.received >= pending.expected:
            self.flush()

    def flush(self) -> None:
        """Run the pending batch's backward with the gradients received so far (and its step,
        if an optimizer waits)."""
        pending, self._pending = self._pending, None
        if pending is None or pending.done:
            return
        pending.done = True
        if any(g is not None for g in pending.grads):
            pending.backprop([g or DocTransformerGradient() for g in pending.grads])
            self.has_gradient = True
        if pending.sgd is not None:
            self.step(pending.sgd)


def ignore_gradient(d_outputs: list[DocTransformerGradient]) -> list:
    """Where listeners send gradients when the encoder does not train."""
    return []
