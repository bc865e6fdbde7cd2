"""What a data-parallel training run needs to continue where it stopped: the progress
(``TrainState``), the raw weights and the optimizer's state, each parameter saved by its
position in ``trainable_params`` (Thinc's ids differ from process to process)."""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import srsly
from thinc.api import Model, Optimizer, get_current_ops, to_numpy

from .params import Param, set_weights

STATE_JSON = "state.json"
STATE_BIN = "state.bin"
_PER_KEY = ("mom1", "mom2", "nr_update", "last_seen")


@dataclass
class TrainState:
    """Progress of a run, after its last finished step.

    step (int): Steps done, i.e. the index of the next step.
    epoch (int): The epoch of the last step.
    words (int): Words seen by all workers together.
    seconds (float): Time spent in the training steps (evaluations and checkpoints left out).
    sync_seconds (float): The part of it spent summing gradients over the workers.
    results (list[list[float]]): (score, step) of every evaluation, as spaCy keeps them.
    config (str): A digest of the training config; a resumed run must have the same.
    """

    step: int = 0
    epoch: int = 0
    words: int = 0
    seconds: float = 0.0
    sync_seconds: float = 0.0
    results: list[list[float]] = field(default_factory=list)
    config: str = ""

    @classmethod
    def read(cls, path: Path) -> "TrainState":
        """The progress saved under ``path``."""
        return cls.from_json((path / STATE_JSON).read_text(encoding="utf8"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "TrainState":
        """The progress in the text of a ``state.json``."""
        return cls(**json.loads(text))

    @property
    def best(self) -> tuple[float, int] | None:
        """Best (score, step) so far, the earliest of equal scores (as spaCy picks it)."""
        if not self.results:
            return None
        score, neg_step = max((s, -st) for s, st in self.results)
        return score, int(-neg_step)


def save_state(
    path: Path,
    state: TrainState,
    params: list[Param],
    optimizer: Optimizer,
    class_nodes: Sequence[Model] = (),
) -> None:
    """Write ``state``, the raw weights, the optimizer's state and the parsers' unseen
    actions (``unseen_class_nodes``) under ``path``."""
    index = {p.key: i for i, p in enumerate(params)}
    tables = {name: getattr(optimizer, name) for name in _PER_KEY}
    if optimizer.averages is not None:
        tables["averages"] = optimizer.averages
    data: dict[str, Any] = {
        name: [[index[k], _plain(v)] for k, v in table.items() if k in index]
        for name, table in tables.items()
    }
    data["weights"] = [p.weight.detach().cpu().numpy() for p in params]
    data["unseen_classes"] = [sorted(n.attrs["unseen_classes"]) for n in class_nodes]
    (path / STATE_BIN).write_bytes(srsly.msgpack_dumps(data))
    srsly.write_json(path / STATE_JSON, asdict(state))


def load_state(
    path: Path,
    params: list[Param],
    optimizer: Optimizer,
    class_nodes: Sequence[Model] = (),
) -> TrainState:
    """Restore what ``save_state`` wrote into ``params``, ``optimizer`` and ``class_nodes``;
    return the progress."""
    data = srsly.msgpack_loads((path / STATE_BIN).read_bytes())
    unseen = data["unseen_classes"]
    if len(data["weights"]) != len(params) or len(unseen) != len(class_nodes):
        raise ValueError(
            f"The checkpoint at {path} has {len(data['weights'])} parameters, the pipeline "
            f"{len(params)}: resume with the config of the stopped run."
        )
    set_weights(params, data["weights"])
    for node, classes in zip(class_nodes, unseen, strict=True):
        node.attrs["unseen_classes"] = set(classes)
    ops = get_current_ops()
    for name in (*_PER_KEY, "averages"):
        table = getattr(optimizer, name)
        if table is None or name not in data:
            continue
        for i, value in data[name]:
            # msgpack's arrays are read-only views of the file's bytes: the optimizer writes
            table[params[i].key] = (
                value if isinstance(value, int) else ops.asarray(cast(Any, np.array(value)))
            )
    state = TrainState.read(path)
    for _ in range(state.step):  # learning rate and other schedules, where they were
        optimizer.step_schedules()
    return state


def _plain(value: Any) -> Any:
    return value if isinstance(value, int) else to_numpy(value)
