"""``inference = "auto"``: the fastest backend on this machine whose outputs agree with fp32.

The candidates ("torch"; "int8" on CPU; "bf16" where the CPU computes bf16 natively or on a GPU
that supports it) run the first batch the encoder predicts, tiled to a realistic size: each one's
output is compared with fp32's, then they are timed in interleaved rounds (a few seconds, once).
The choice is remembered per machine, thread count, torch version and model (shape and weights),
in this process and in the cache file (choices.py), so later processes do not measure again.
"""

import hashlib
import logging
import math
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..streams import Predict
from . import choices
from .bf16 import native_bf16

logger = logging.getLogger("spacy_trf")

# The lowest mean cosine (over real pieces) between a candidate's output and fp32's: int8 on
# MiniLM keeps about 0.98 on AVX2 CPUs and 0.99 with AVX512-VNNI, and kept tagger, NER and
# parser scores within 0.35 points (docs/backends.md).
MIN_COSINE = 0.97
MIN_TOP1 = 0.99  # models with a classification head: positions whose best label is fp32's
MIN_SPEEDUP = 1.1  # a backend that changes the outputs must be this much faster than fp32
ROUNDS = 3
BUDGET_S = 6.0  # fewer rounds for models too large to time three times in this
MIN_PIECES = 1024  # the timed batch: the first batch's rows repeated up to this many pieces

_chosen: dict[str, "Choice"] = {}  # this process's choices, by machine_key
_lock = threading.Lock()


@dataclass(frozen=True)
class Trial:
    """One candidate's measurement: median seconds per timed batch, the mean cosine of its
    output with fp32's (1.0 for "torch") and, for a classification head, the share of
    positions whose best label agrees; ``error`` when it could not run."""

    backend: str
    seconds: float | None
    cosine: float | None
    top1: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Choice:
    """The backend that "auto" stands for, the measurements behind it, and whether they were
    made now or read from the cache file."""

    backend: str
    key: str
    trials: tuple[Trial, ...]
    measured: bool


def candidates(device: torch.device) -> list[str]:
    """The backends "auto" times on ``device``; bf16 never where it would be emulated."""
    if device.type == "cpu":
        return ["torch", "int8", *(["bf16"] if native_bf16() else [])]
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return ["torch", *(["bf16"] if bf16 else [])]


def machine_key(hf_model: torch.nn.Module, device: torch.device, flags: dict[str, bool]) -> str:
    """What the choice depends on: processor, threads, torch version, the model's class, shape
    and weights, and the outputs asked for."""
    config: Any = hf_model.config
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{cpu_name()}, {torch.get_num_threads()} threads"
    names = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_labels")
    shape = "x".join(str(getattr(config, name, "-")) for name in names)
    outputs = ",".join(name for name in sorted(flags) if flags[name])
    return (
        f"{where} | torch {torch.__version__}, {torch.backends.quantized.engine} | "
        f"{type(hf_model).__name__} {shape} {_fingerprint(hf_model)} | {outputs or 'last layer'}"
    )


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose(
    key: str, runs: dict[str, Predict], inputs: dict[str, torch.Tensor], head: bool
) -> Choice:
    """The choice for ``key`` made earlier in this process or remembered in the cache file, else
    measure ``runs`` (``runs["torch"]`` is the fp32 reference) on ``inputs`` and remember it."""
    directory = choices.cache_dir()
    with _lock, choices.locked(directory):
        known = _chosen.get(key) or _recall(directory, key)
        if known is not None and known.backend in runs:
            _chosen[key] = known
            return known
        trials = measure(runs, tile(inputs), head)
        choice = _chosen[key] = Choice(decide(trials), key, trials, measured=True)
        logger.info('inference = "auto" chose "%s" (%s): %s', choice.backend, key, describe(trials))
        entry = {"backend": choice.backend, "trials": [asdict(t) for t in trials]}
        choices.remember(directory, key, {**entry, "measured": time.strftime("%Y-%m-%dT%H:%M")})
        return choice


def forget_choices() -> None:
    """Forget the choices made in this process (the cache file keeps them)."""
    with _lock:
        _chosen.clear()


def measure(
    runs: dict[str, Predict], inputs: dict[str, torch.Tensor], head: bool
) -> tuple[Trial, ...]:
    """Compare each run's output with that of ``runs["torch"]`` (an untimed call, which also
    builds converted models), then time them in interleaved rounds: ``ROUNDS``, or fewer once
    ``BUDGET_S`` seconds are spent."""
    mask = inputs["attention_mask"].bool() if "attention_mask" in inputs else None
    started = time.perf_counter()
    reference = _output(runs["torch"], inputs, mask)
    agreement: dict[str, tuple[float, float | None]] = {"torch": (1.0, 1.0 if head else None)}
    errors: dict[str, str] = {}
    for name, run in runs.items():
        if name == "torch":
            continue
        try:
            got = _output(run, inputs, mask)
        except Exception as error:  # a backend this machine cannot run is not a candidate
            errors[name] = f"{type(error).__name__}: {error}"
            continue
        cosine = float(torch.nn.functional.cosine_similarity(got, reference, dim=-1).mean())
        top1 = float((got.argmax(-1) == reference.argmax(-1)).float().mean()) if head else None
        agreement[name] = (cosine, top1)
    seconds: dict[str, list[float]] = {name: [] for name in agreement}
    for _ in range(ROUNDS):
        for name in agreement:
            start = time.perf_counter()
            _output(runs[name], inputs, mask)
            seconds[name].append(time.perf_counter() - start)
        if time.perf_counter() - started > BUDGET_S:
            break
    trials = [
        Trial(name, statistics.median(seconds[name]), round(cos, 5), top1)
        for name, (cos, top1) in agreement.items()
    ]
    trials += [Trial(name, None, None, None, error) for name, error in errors.items()]
    return tuple(trials)


def decide(trials: tuple[Trial, ...]) -> str:
    """The fastest trial whose outputs agree with fp32; a backend other than "torch" only when
    it is at least ``MIN_SPEEDUP`` times faster."""
    exact = next(t.seconds for t in trials if t.backend == "torch")
    assert exact is not None
    best, best_seconds = "torch", exact
    for trial in trials:
        if trial.seconds is None or not _agrees(trial):
            continue
        if trial.seconds * MIN_SPEEDUP <= exact and trial.seconds < best_seconds:
            best, best_seconds = trial.backend, trial.seconds
    return best


def describe(trials: tuple[Trial, ...]) -> str:
    """One line: each candidate's time and agreement, or why it could not run."""
    parts = []
    for t in trials:
        if t.seconds is None:
            parts.append(f"{t.backend} failed ({t.error})")
        else:
            top1 = f", best label {t.top1:.3f}" if t.top1 is not None else ""
            parts.append(f"{t.backend} {t.seconds * 1000:.0f} ms (cosine {t.cosine:.4f}{top1})")
    return ", ".join(parts)


def tile(inputs: dict[str, torch.Tensor], min_pieces: int = MIN_PIECES) -> dict[str, torch.Tensor]:
    """The batch with its rows repeated until it holds at least ``min_pieces`` pieces."""
    rows, length = next(iter(inputs.values())).shape
    times = max(1, -(-min_pieces // (rows * length)))
    return {name: t.repeat(times, 1) for name, t in inputs.items()}


def _agrees(trial: Trial) -> bool:
    cosine, top1 = trial.cosine, trial.top1
    if cosine is None or not math.isfinite(cosine) or not cosine >= MIN_COSINE:
        return False
    return top1 is None or top1 >= MIN_TOP1


def _output(
    run: Predict, inputs: dict[str, torch.Tensor], mask: torch.Tensor | None
) -> torch.Tensor:
    """The last stream's rows at real positions, in fp32, once computed (on a GPU: synced)."""
    last = run(inputs)[0][-1].float()
    if last.is_cuda:
        torch.cuda.synchronize(last.device)
    return last[mask] if mask is not None else last.reshape(-1, last.shape[-1])


def _fingerprint(hf_model: torch.nn.Module) -> str:
    """A short hash of a few of the weights: fine-tuned copies of one model choose apart."""
    digest = hashlib.sha1()
    params = list(hf_model.parameters())
    for param in params[:2] + params[-2:]:
        digest.update(param.detach().reshape(-1)[:256].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:10]


def _recall(directory: Path | None, key: str) -> Choice | None:
    entry = choices.recall(directory, key)
    if entry is None or not isinstance(entry.get("backend"), str):
        return None
    try:
        trials = tuple(Trial(**t) for t in entry.get("trials", []))
    except TypeError:
        trials = ()
    return Choice(entry["backend"], key, trials, measured=False)


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_new_lock_in_child)
