"""Words/s of spacy-huggingface-pipelines' hf_token_pipe (run in .venv-shp, setup_shp.sh).

    .venv-shp/bin/python benchmarks/interop/shp_speed.py MODEL_DIR TEXTS.json REPEATS

Prints one JSON object: words (spaCy tokens), words_per_s (best of REPEATS), version.
"""

import json
import os
import sys
import time
import warnings
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")


def main() -> None:
    import spacy
    import torch

    model_dir, texts_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(2)
    with open(texts_path) as f:
        texts = json.load(f)
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "hf_token_pipe",
        config={"model": model_dir, "aggregation_strategy": "first"},
    )
    n_words = sum(len(d) for d in nlp.tokenizer.pipe(texts))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        list(nlp.pipe(texts, batch_size=64))
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"words": n_words, "words_per_s": n_words / best,
                      "version": version("spacy-huggingface-pipelines"),
                      "transformers": version("transformers")}))  # fmt: skip


if __name__ == "__main__":
    main()
