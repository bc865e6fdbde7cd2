"""``inference = "auto"``: the fastest backend on this machine whose outputs agree with fp32.

The candidates ("torch"; "int8" on CPU; "bf16" where the CPU computes bf16 natively or on a GPU
that supports it) are timed on the first batch the encoder predicts (tiled to a realistic size),
in interleaved rounds, and each one's last hidden state is compared with fp32's (a few seconds,
once). The choice is remembered per machine, torch version, thread count and model shape, in this
process and in ``inference.json`` under ``$SPACY_TRF_CACHE`` (default ``~/.cache/spacy-trf``), so
that later processes do not measure again.
"""

import json
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .bf16 import native_bf16

logger = logging.getLogger("spacy_trf")

# The lowest mean cosine (over real pieces) between a candidate's last hidden state and fp32's:
# int8 on MiniLM keeps about 0.98 on AVX2 CPUs and 0.99 with AVX512-VNNI, and kept tagger, NER
# and parser scores within 0.35 points (docs/backends.md).
MIN_COSINE = 0.97
# A backend that changes the outputs must be this much faster than fp32 to be chosen.
MIN_SPEEDUP = 1.1
ROUNDS = 3
BUDGET_S = 6.0  # fewer rounds for models too large to time three times in this
MIN_PIECES = 1024  # the timed batch: the first batch's rows repeated up to this many pieces
CACHE_ENV = "SPACY_TRF_CACHE"
CACHE_FILE = "inference.json"

# inputs -> (streams, attentions): one backend's prediction, as InferenceBackends builds it
Run = Callable[[dict[str, torch.Tensor]], tuple[list[torch.Tensor], Any]]

_chosen: dict[str, "Choice"] = {}  # this process's choices, by machine_key
_lock = threading.Lock()


@dataclass(frozen=True)
class Trial:
    """One candidate's measurement: median seconds per timed batch, and the mean cosine of its
    last hidden state with fp32's (1.0 for "torch"); ``error`` when it could not run."""

    backend: str
    seconds: float | None
    cosine: float | None
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


def machine_key(hf_model: torch.nn.Module, device: torch.device, want_hidden: bool) -> str:
    """What the choice depends on: processor, torch version, threads, device, model shape."""
    config = hf_model.config
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{cpu_name()}, {torch.get_num_threads()} threads"
    shape = "x".join(
        str(getattr(config, name, "?"))
        for name in ("num_hidden_layers", "hidden_size", "intermediate_size")
    )
    streams = "all layers" if want_hidden else "last layer"
    model = type(hf_model).__name__
    return f"{where} | torch {torch.__version__} | {model} {shape} | {streams}"


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
    key: str, runs: dict[str, Run], inputs: dict[str, torch.Tensor], cache_dir: Path | None
) -> Choice:
    """The choice for ``key`` made earlier in this process or remembered in the cache file, else
    measure ``runs`` on ``inputs`` and remember."""
    with _lock:
        known = _chosen.get(key) or _from_file(cache_dir, key)
        if known is not None and known.backend in runs:
            _chosen[key] = known
            return known
        trials = measure(runs, tile(inputs))
        choice = _chosen[key] = Choice(decide(trials), key, trials, measured=True)
        logger.info('inference = "auto" chose "%s" (%s): %s', choice.backend, key, describe(trials))
        if cache_dir is not None:
            _remember(cache_dir / CACHE_FILE, choice)
        return choice


def forget_choices() -> None:
    """Forget the choices made in this process (the cache file keeps them)."""
    with _lock:
        _chosen.clear()


def measure(runs: dict[str, Run], inputs: dict[str, torch.Tensor]) -> tuple[Trial, ...]:
    """Compare each run's last hidden state with that of ``runs["torch"]`` (an untimed call,
    which also builds converted models), then time them in interleaved rounds: ``ROUNDS``, or
    fewer once ``BUDGET_S`` seconds are spent."""
    mask = inputs["attention_mask"].bool() if "attention_mask" in inputs else None
    started = time.perf_counter()
    reference = _last(runs["torch"](inputs), mask)
    cosines: dict[str, float] = {"torch": 1.0}
    errors: dict[str, str] = {}
    for name, run in runs.items():
        if name == "torch":
            continue
        try:
            got = _last(run(inputs), mask)
        except Exception as error:  # a backend this machine cannot run is not a candidate
            errors[name] = f"{type(error).__name__}: {error}"
            continue
        cosines[name] = float(torch.nn.functional.cosine_similarity(got, reference, dim=-1).mean())
    seconds: dict[str, list[float]] = {name: [] for name in cosines}
    for _ in range(ROUNDS):
        for name in cosines:
            start = time.perf_counter()
            runs[name](inputs)
            seconds[name].append(time.perf_counter() - start)
        if time.perf_counter() - started > BUDGET_S:
            break
    trials = [
        Trial(name, statistics.median(seconds[name]), round(cosines[name], 5)) for name in cosines
    ]
    trials += [Trial(name, None, None, error) for name, error in errors.items()]
    return tuple(trials)


def decide(trials: tuple[Trial, ...]) -> str:
    """The fastest trial whose outputs agree with fp32; a backend other than "torch" only when
    it is at least ``MIN_SPEEDUP`` times faster."""
    exact = next(t.seconds for t in trials if t.backend == "torch")
    assert exact is not None
    best, best_seconds = "torch", exact
    for trial in trials:
        seconds = trial.seconds
        if seconds is None or trial.cosine is None or trial.cosine < MIN_COSINE:
            continue
        if seconds * MIN_SPEEDUP <= exact and seconds < best_seconds:
            best, best_seconds = trial.backend, seconds
    return best


def describe(trials: tuple[Trial, ...]) -> str:
    """One line: each candidate's time and cosine, or why it could not run."""
    parts = []
    for t in trials:
        if t.seconds is None:
            parts.append(f"{t.backend} failed ({t.error})")
        else:
            parts.append(f"{t.backend} {t.seconds * 1000:.0f} ms (cosine {t.cosine:.4f})")
    return ", ".join(parts)


def cache_dir() -> Path | None:
    """Where choices are remembered: ``$SPACY_TRF_CACHE``, else ``~/.cache/spacy-trf``; ``None``
    when ``SPACY_TRF_CACHE`` is set empty (measure in every process)."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spacy-trf"


def tile(inputs: dict[str, torch.Tensor], min_pieces: int = MIN_PIECES) -> dict[str, torch.Tensor]:
    """The batch with its rows repeated until it holds at least ``min_pieces`` pieces."""
    rows, length = next(iter(inputs.values())).shape
    times = max(1, -(-min_pieces // (rows * length)))
    return {name: t.repeat(times, 1) for name, t in inputs.items()}


def _last(result: tuple[list[torch.Tensor], Any], mask: torch.Tensor | None) -> torch.Tensor:
    last = result[0][-1].float()
    return last[mask] if mask is not None else last.reshape(-1, last.shape[-1])


def _from_file(cache_dir: Path | None, key: str) -> Choice | None:
    known = _read(cache_dir / CACHE_FILE if cache_dir is not None else None).get(key)
    if not isinstance(known, dict) or not isinstance(known.get("backend"), str):
        return None
    try:
        trials = tuple(Trial(**t) for t in known.get("trials", []))
    except TypeError:
        trials = ()
    return Choice(known["backend"], key, trials, measured=False)


def _read(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # unreadable: measure again and rewrite it
    return data if isinstance(data, dict) else {}


def _remember(path: Path, choice: Choice) -> None:
    """Add the choice to the cache file, written whole to a temporary file and moved into place
    (other processes read either the old file or the new one)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read(path)
        data[choice.key] = {
            "backend": choice.backend,
            "trials": [asdict(t) for t in choice.trials],
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".inference-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(data, file, indent=1)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as error:
        logger.warning("Could not remember the inference choice in %s: %s", path, error)
