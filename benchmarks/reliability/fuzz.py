"""Any text, at scale: tests/test_fuzz.py's property with many more drawn texts per family.

    python benchmarks/reliability/fuzz.py --texts 10000

Runs the same Hypothesis property as the default suite (random Unicode, emoji, control and bidi
characters, whitespace runs, special-token strings, 5,000-character tokens, empty docs through
``nlp.pipe``) for BERT (MiniLM), byte-BPE RoBERTa and Unigram XLM-R, with enough examples for
about ``--texts`` texts per family (an example is a batch of 1-4 texts), and records what ran.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from record import cpu_flags, cpu_name, merge_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"
TEXTS_PER_EXAMPLE = 2.5  # the mean of lists of 1-4 texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000, help="Texts per family (about).")
    args = parser.parse_args()
    examples = max(1, round(args.texts / TEXTS_PER_EXAMPLE))
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.jsonl"
        env = {**os.environ, "SPACY_TRF_FUZZ_EXAMPLES": str(examples),
               "SPACY_TRF_FUZZ_REPORT": str(report)}  # fmt: skip
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             str(ROOT / "tests" / "test_fuzz.py")],
            env=env, cwd=ROOT, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        counts = (
            [json.loads(line) for line in report.read_text().splitlines()]
            if report.exists()
            else []
        )
    rows = [{**c, "failures": 0 if run.returncode == 0 else None, "examples": examples,
             "device": cpu_name(), "cpu_flags": cpu_flags()} for c in counts]  # fmt: skip
    print(f"{'family':8} {'texts':>7} {'tokens':>9} {'pieces':>9} {'chars':>10}  result")
    for row in rows:
        print(f"{row['family']:8} {row['texts']:>7} {row['tokens']:>9} {row['pieces']:>9} "
              f"{row['chars']:>10}  passed")  # fmt: skip
    print(f"pytest exit code {run.returncode}, {seconds:.0f} s; CPU: {cpu_name()} ({cpu_flags()})")
    print(f"command: python benchmarks/reliability/fuzz.py --texts {args.texts}")
    if run.returncode == 0 and len(rows) == 3:
        merge_rows(RESULTS, [{"benchmark": "fuzz", **r} for r in rows],
                   key=lambda r: (r.get("benchmark"), r.get("family")))  # fmt: skip
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
