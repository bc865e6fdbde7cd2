"""Corpus annotation on Ray against one nlp.pipe process, on the same 2 cores.

    python benchmarks/scale/annotate.py                 # EWT train as docs of 10 sentences
    python benchmarks/scale/annotate.py --table         # print benchmarks/results/scale.json

The pipeline: `spacy-trf init-config --pipeline tagger` (the shipped MiniLM, inference "auto"),
initialized on 200 EWT sentences (speed does not depend on the weights), saved once. Systems:
nlp.pipe in this process with 1 and 2 torch threads, and `spacy_trf.distributed.annotate` with 1
and 2 Ray workers of 1 thread each (a local cluster started before the timing; each run loads
the pipeline in its actors). Then the cost of Ray per document (1 worker against nlp.pipe with
1 thread), and of `--resume`: on a finished run, and with half of its shards to redo.
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
from record import cpu_name, merge_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale.json"


def build_pipeline(data: Path, path: Path) -> None:
    import spacy
    from spacy.training import Example
    from worker import ewt_docs

    from spacy_trf.cli.init_config import make_config

    nlp = spacy.util.load_model_from_config(make_config(["tagger"]), auto_fill=True)
    gold = ewt_docs(data, "train", n_sents=1, limit=200)
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in gold])
    nlp.to_disk(path)


def pipe_seconds(
    pipeline: Path, texts: list[str], threads: int, batch_size: int, loading: dict[str, float]
) -> float:
    import spacy
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    nlp = spacy.load(pipeline)
    list(nlp.pipe(texts[:64], batch_size=batch_size))  # warm-up (int8 conversion)
    loading["seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=batch_size):
        pass
    return time.perf_counter() - start


def ray_seconds(
    pipeline: Path, source: Path, out: Path, workers: int, args: Any, **kw: Any
) -> float:
    from spacy_trf.distributed import annotate

    start = time.perf_counter()
    annotate(pipeline, source, out, workers=workers, threads_per_worker=1, fmt="jsonl",
             batch_size=args.batch_size, shard_mb=args.shard_mb, progress=False, **kw)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sents", type=int, default=None, help="first N EWT train sentences")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-mb", type=float, default=0.1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(args.results.read_text()))
        return
    import ray
    from worker import ewt_docs

    docs = ewt_docs(args.data, "train", limit=args.sents)
    texts, words = [d.text for d in docs], sum(len(d) for d in docs)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_pipeline(args.data, work / "pipeline")
        source = work / "ewt.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        loading: dict[str, float] = {}
        seconds = {
            "nlp.pipe, 1 thread": pipe_seconds(
                work / "pipeline", texts, 1, args.batch_size, loading
            ),
            "nlp.pipe, 2 threads": pipe_seconds(
                work / "pipeline", texts, 2, args.batch_size, loading
            ),
        }
        seconds["loading the pipeline and a warm-up batch"] = loading["seconds"]
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        for n in (1, 2):
            out = work / f"out{n}"
            seconds[f"Ray, {n} worker(s) x 1 thread"] = ray_seconds(
                work / "pipeline", source, out, n, args
            )
        out = work / "out2"
        seconds["resume, all shards done"] = ray_seconds(
            work / "pipeline", source, out, 2, args, resume=True
        )
        manifest = json.loads((out / "manifest.json").read_text())
        names = sorted(manifest["shards"])
        for name in names[len(names) // 2 :]:
            del manifest["shards"][name]
        (out / "manifest.json").write_text(json.dumps(manifest))
        seconds["resume, half the shards to redo"] = ray_seconds(
            work / "pipeline", source, out, 2, args, resume=True
        )
        n_shards = len(names)
        ray.shutdown()
    rows = []
    command = "python benchmarks/scale/annotate.py " + " ".join(sys.argv[1:])
    for system, s in seconds.items():
        rows.append({"measure": "annotate EWT train docs", "system": system, "seconds": round(s, 2),
                     "words_per_s": round(words / s), "docs": len(texts), "words": words,
                     "shards": n_shards, "device": f"{cpu_name()}, {os.cpu_count()} CPUs",
                     "run": run_id, "command": command})  # fmt: skip
    # Fixed costs of a Ray run: planning, counting lines, starting Ray Data (a resume with
    # nothing to do) and loading the pipeline in the actors.
    fixed = seconds["resume, all shards done"] + seconds["loading the pipeline and a warm-up batch"]
    ray_1 = seconds["Ray, 1 worker(s) x 1 thread"]
    overhead = (ray_1 - fixed - seconds["nlp.pipe, 1 thread"]) / len(texts)
    rows.append({"measure": "annotate EWT train docs", "system": "Ray fixed cost per run (s)",
                 "seconds": round(fixed, 2), "run": run_id, "command": command,
                 "device": f"{cpu_name()}, {os.cpu_count()} CPUs"})  # fmt: skip
    rows.append({"measure": "annotate EWT train docs",
                 "system": "Ray overhead per document beyond the fixed cost (ms)",
                 "seconds": round(overhead * 1000, 2), "run": run_id, "command": command,
                 "device": f"{cpu_name()}, {os.cpu_count()} CPUs"})  # fmt: skip
    merge_rows(args.results, rows, lambda r: (r["measure"], r["system"]))
    print_table(rows)
    print(f"\ncommand: {command}")


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| system | seconds | words/s |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['system']} | {r['seconds']} | {r.get('words_per_s', '')} |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
