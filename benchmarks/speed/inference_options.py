"""Accuracy and speed of a trained pipeline under each inference option (backend, stride).

    python benchmarks/speed/inference_options.py --pipeline PIPELINE --dev DEV.spacy \
        [--inference torch,bf16,int8,compile,onnx] [--strides 110,126]

Loads PIPELINE once per option (spacy.load with the option as a config override), evaluates it
on DEV.spacy with spaCy's scorer (nlp.evaluate, examples read by spaCy's Corpus as `spacy
evaluate` reads them) and times that evaluation after a warm-up on the first docs and on one
short text (the ONNX export and torch.compile's two compilations happen there, untimed). Prints
each metric's change against the first option and records the rows in
benchmarks/results/inference_options.json.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import spacy  # noqa: E402
import torch  # noqa: E402
from spacy.training import Corpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import cpu_name, merge_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "inference_options.json"
METRICS = {  # spaCy score key -> label
    "tag_acc": "XPOS",
    "pos_acc": "UPOS",
    "morph_acc": "morph",
    "dep_uas": "UAS",
    "dep_las": "LAS",
    "ents_f": "NER F1",
    "cats_macro_f": "textcat macro F",
}


def evaluate(
    pipeline: Path, dev: Path, inference: str, stride: int | None
) -> tuple[dict[str, float], float, int]:
    """Scores (percent), words/s of the evaluation and the stride used."""
    trf: dict[str, Any] = {"inference": inference}
    if stride is not None:
        trf["model"] = {"stride": stride}
    nlp = spacy.load(pipeline, config={"components": {"trf": trf}})
    examples = list(Corpus(dev)(nlp))  # as `spacy evaluate` reads it (gold words if no spaces)
    nlp("Warm-up.")  # one window: "compile" compiles batches of one apart from larger ones
    nlp.evaluate(examples[:8])  # warm-up (and the ONNX export)
    start = time.perf_counter()
    scores = nlp.evaluate(examples)
    seconds = time.perf_counter() - start
    found = {key: 100 * float(scores[key]) for key in METRICS if scores.get(key) is not None}
    words = sum(len(eg.reference) for eg in examples)
    return found, words / seconds, int(nlp.get_pipe("trf").model.attrs["stride"])  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, required=True)
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--inference", default="torch,bf16,int8,compile,onnx")
    parser.add_argument("--strides", default="", help="comma-separated; default: the saved one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="", help="label for the results (default: dev file)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    strides: list[int | None] = [int(s) for s in args.strides.split(",") if s] or [None]
    command = "python benchmarks/speed/inference_options.py " + " ".join(sys.argv[1:])
    rows = []
    for stride in strides:
        for inference in args.inference.split(","):
            scores, wps, used = evaluate(args.pipeline, args.dev, inference, stride)
            rows.append(
                {
                    "task": args.name or args.dev.parent.name,
                    "inference": inference,
                    "stride": used,
                    "scores": {METRICS[k]: round(v, 2) for k, v in scores.items()},
                    "words_per_second": round(wps, 1),
                    "command": command,
                    "device": f"{cpu_name()}, {args.threads} threads",
                    "date": time.strftime("%Y-%m-%d"),
                }
            )
            print(f"  {inference} stride {used}: {scores} {wps:,.0f} words/s", file=sys.stderr)
    base = rows[0]
    labels = list(base["scores"])
    print("| inference | stride | " + " | ".join(labels) + " | words/s (eval) |")
    print("|---|---:|" + "---:|" * (len(labels) + 1))
    for r in rows:
        cells = []
        for label in labels:
            delta = r["scores"][label] - base["scores"][label]
            cells.append(
                f"{r['scores'][label]:.2f}" + (f" ({delta:+.2f})" if r is not base else "")
            )
        print(
            f"| {r['inference']} | {r['stride']} | "
            + " | ".join(cells)
            + f" | {r['words_per_second']:,.0f} |"
        )
    merge_rows(RESULTS, rows, lambda r: (r["task"], r["inference"], r["stride"]))
    print()
    print(f"command: {command}")


if __name__ == "__main__":
    main()
