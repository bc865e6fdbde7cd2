"""Data-parallel training on Ray Train, 1 worker against 2, on the same 2 cores.

    python benchmarks/scale/train.py --steps 150      # EWT train, tagger on the shipped MiniLM
    python benchmarks/scale/train.py --table          # the rows of benchmarks/results/scale.json

The config: `spacy-trf init-config --pipeline tagger` (its batcher, accumulate_gradient and
learning rate), `--steps` steps, evaluated on the first `--dev-sents` EWT dev sentences four
times. Systems: `spacy_trf.distributed.train` with 1 worker x 2 torch threads and with 2
workers x 1 thread, each on a fresh local cluster; both take the same global batches, so the
words per step are equal. Training words/s count the training steps only (evaluations and
checkpoints left out); the all-reduce column is the time spent summing gradients over the
workers, per step.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "speed"))
from record import cpu_flags, cpu_name, merge_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
MEASURE = "train tagger on EWT train"


def write_corpus(data: Path, work: Path, dev_sents: int) -> None:
    from spacy.tokens import DocBin
    from worker import ewt_docs

    DocBin(docs=ewt_docs(data, "train")).to_disk(work / "train.spacy")
    DocBin(docs=ewt_docs(data, "dev", limit=dev_sents)).to_disk(work / "dev.spacy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--dev-sents", type=int, default=500)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        print_table([r for r in json.loads(args.results.read_text()) if r["measure"] == MEASURE])
        return
    from spacy_trf.cli.init_config import make_config
    from spacy_trf.distributed import train

    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    command = "python benchmarks/scale/train.py " + " ".join(sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_corpus(args.data, work, args.dev_sents)
        (work / "config.cfg").write_text(make_config(["tagger"], max_steps=args.steps).to_str())
        overrides = {
            "paths.train": str(work / "train.spacy"),
            "paths.dev": str(work / "dev.spacy"),
            "training.eval_frequency": max(1, args.steps // 4),
            "training.logger.progress_bar": False,
        }
        for workers, threads in ((1, 2), (2, 1)):
            start = time.perf_counter()
            result = train(work / "config.cfg", work / f"out{workers}", workers=workers,
                           threads_per_worker=threads, overrides=overrides)  # fmt: skip
            wall = time.perf_counter() - start
            rows.append({"measure": MEASURE, "system": f"{workers} worker(s) x {threads} thread(s)",
                         "steps": result.steps, "words": result.words,
                         "train_seconds": round(result.seconds, 1),
                         "words_per_s": round(result.words / result.seconds),
                         "allreduce_ms_per_step":
                             round(1000 * result.sync_seconds / result.steps, 1),
                         "wall_seconds": round(wall, 1), "dev_tag_acc": result.best_score,
                         "device": f"{cpu_name()}, {os.cpu_count()} CPUs", "cpu_flags": cpu_flags(),
                         "run": run_id, "command": command})  # fmt: skip
    merge_rows(args.results, rows, lambda r: (r["measure"], r["system"]))
    print_table(rows)
    print(f"\ncommand: {command}")


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| system | steps | words/s (training steps) | all-reduce ms/step | wall s | best dev "
          "score (tag_acc) |\n|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for r in rows:
        cells = [r["system"], r["steps"], r["words_per_s"], r["allreduce_ms_per_step"],
                 r["wall_seconds"], f"{r['dev_tag_acc']:.4f}"]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
