"""A spaCy training logger that also records time and words per step, so that the accuracy
benchmark can report training words/s without the cost of evaluations.

Loaded with ``spacy train --code`` in every system's environment (spacy-trf, spaCy's CNN,
spacy-transformers), so it depends on spaCy alone.
"""

import json
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from spacy import registry
from spacy.language import Language
from spacy.training.loggers import console_logger


@registry.loggers("spacy-trf-bench.TimedLogger.v1")
def timed_logger(path: str) -> Callable[..., Any]:
    """spaCy's console logger, plus one JSON line per evaluation in ``path``: step, epoch,
    words seen, wall seconds, seconds spent evaluating, and the dev scores."""
    console = console_logger(progress_bar=False)

    def setup(
        nlp: Language, stdout: IO = sys.stdout, stderr: IO = sys.stderr
    ) -> tuple[Callable[[dict[str, Any] | None], None], Callable[[], None]]:
        log_console, finalize_console = console(nlp, stdout, stderr)
        out = open(path, "w", encoding="utf8")
        start = last = time.perf_counter()
        step_seconds: list[float] = []  # steps without an evaluation
        eval_seconds = 0.0

        def log_step(info: dict[str, Any] | None) -> None:
            nonlocal last, eval_seconds
            now = time.perf_counter()
            elapsed, last = now - last, now
            if info is None:
                step_seconds.append(elapsed)
                return
            # This interval holds one training step and one evaluation: charge a typical
            # step's time to training and the rest to the evaluation.
            typical = sorted(step_seconds)[len(step_seconds) // 2] if step_seconds else 0.0
            eval_seconds += max(0.0, elapsed - typical)
            record = {
                "step": info["step"],
                "epoch": info["epoch"],
                "words": info["words"],
                "seconds": now - start,
                "eval_seconds": eval_seconds,
                "score": info["score"],
                "scores": info["other_scores"],
                "losses": info["losses"],
                "threads": os.environ.get("OMP_NUM_THREADS"),
            }
            out.write(json.dumps(record, default=float) + "\n")
            out.flush()
            log_console(info)

        def finalize() -> None:
            out.close()
            finalize_console()

        return log_step, finalize

    return setup
