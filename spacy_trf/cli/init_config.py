"""``spacy-trf init-config``: a complete training config with spaCy's components listening to
one shared ``trf`` encoder."""

from pathlib import Path
from typing import Any

from spacy import util
from spacy.language import DEFAULT_CONFIG
from thinc.api import Config

from .. import defaults

COMPONENTS = (
    "tagger",
    "morphologizer",
    "parser",
    "ner",
    "spancat",
    "textcat",
    "textcat_multilabel",
)
DEFAULT_MODEL = defaults.MODEL
OPTIMIZE = ("efficiency", "accuracy")
# Token-level components that take extra hash-embedding features (--hybrid, the default): with
# MiniLM (uncased) they gave NER F1 91.8 against 90.7 on CoNLL-2003 dev, and EWT UPOS/LAS
# 96.12/84.86 against 95.85/83.72 at step 800 (benchmarks/accuracy).
TOKEN_COMPONENTS = ("tagger", "morphologizer", "parser", "ner", "spancat")
# Config keys of attention-probability dropout, by model family (BERT/RoBERTa/XLM-R/ELECTRA/
# DeBERTa; DistilBERT/ModernBERT). On CPU, drawing its random mask over every window's n x n
# attention matrix took a third of MiniLM's forward + backward time (benchmarks/dropout_cost.py);
# without it, dev scores did not drop (benchmarks/accuracy).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def no_attention_dropout(model: str) -> dict[str, float]:
    """transformer_config that turns the model's attention dropout off ({} if it has none).

    Raises ModelLoadError, naming the fix, when the model's config cannot be read.
    """
    from ..encoder.checks import RemoteCodeError
    from ..encoder.loading import load_config

    try:
        config = load_config(model)[1]
    except RemoteCodeError:
        return {}  # its own code decides; the config keeps the model's dropout
    for key in ATTENTION_DROPOUT_KEYS:
        if isinstance(getattr(config, key, None), float):
            return {key: 0.0}
    return {}


def listener(pooling: str = "reduce_mean.v1", layers: Any = "last") -> dict[str, Any]:
    return {
        "@architectures": "spacy-trf.TransformerListener.v1",
        "grad_factor": 1.0,
        "layers": layers,
        "upstream": "*",
        "pooling": {"@layers": pooling},
    }


def hybrid(transformer: dict[str, Any], width: int = 64) -> dict[str, Any]:
    """The listener plus spaCy's hash embeddings of NORM, PREFIX, SUFFIX and SHAPE."""
    return {
        "@architectures": "spacy-trf.HybridTok2Vec.v1",
        "transformer": transformer,
        "embed": {
            "@architectures": "spacy.MultiHashEmbed.v2",
            "width": width,
            "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
            "rows": [5000, 1000, 2500, 2500],
            "include_static_vectors": False,
        },
    }


def parser_model(state_type: str, tok2vec: dict[str, Any], accuracy: bool) -> dict[str, Any]:
    return {
        "@architectures": "spacy.TransitionBasedParser.v2",
        "state_type": state_type,
        "extra_state_tokens": False,
        "hidden_width": (128 if accuracy else 64) if state_type == "ner" else 128,
        "maxout_pieces": 2 if state_type == "ner" else 3,
        "use_upper": False,
        "nO": None,
        "tok2vec": tok2vec,
    }


def component_config(name: str, tok2vec: dict[str, Any], accuracy: bool) -> dict[str, Any]:
    """The block of one component, with its model listening to the trf component."""
    if name in ("tagger", "morphologizer"):
        model = {"@architectures": "spacy.Tagger.v2", "nO": None, "normalize": False}
        return {"factory": name, "model": {**model, "tok2vec": tok2vec}}
    if name == "parser":
        return {"factory": name, "model": parser_model("parser", tok2vec, accuracy)}
    if name == "ner":
        return {"factory": name, "model": parser_model("ner", tok2vec, accuracy)}
    if name == "spancat":
        return {
            "factory": name,
            "spans_key": "sc",
            "model": {
                "@architectures": "spacy.SpanCategorizer.v1",
                "reducer": {"@layers": "spacy.mean_max_reducer.v1", "hidden_size": 128},
                "scorer": {"@layers": "spacy.LinearLogistic.v1", "nO": None, "nI": None},
                "tok2vec": tok2vec,
            },
            "suggester": {"@misc": "spacy.ngram_suggester.v1", "sizes": [1, 2, 3]},
        }
    if name in ("textcat", "textcat_multilabel"):
        return {
            "factory": name,
            "model": {
                "@architectures": "spacy-trf.TransformerTextCat.v1",
                "exclusive_classes": name == "textcat",
                # all-MiniLM-L6-v2 was trained with mean pooling; emotion dev: mean 93.2, cls 92.9.
                "pooling": "mean",
                "layers": "last",
                "grad_factor": 1.0,
                "dropout": 0.1,
                "nO": None,
                "tok2vec": {
                    "@architectures": "spacy-trf.TransformerOutputListener.v1",
                    "upstream": "*",
                },
            },
        }
    raise ValueError(f"Unsupported component {name!r}; choose from: {', '.join(COMPONENTS)}.")


def make_config(
    pipeline: list[str],
    *,
    lang: str = "en",
    model: str = DEFAULT_MODEL,
    optimize: str = "efficiency",
    frozen: bool = False,
    hybrid_features: bool = True,
    max_steps: int = 20000,
) -> Config:
    """A complete config (``spacy init fill-config`` leaves it unchanged) for training
    ``pipeline`` on top of a shared trf encoder.

    hybrid_features: add hash-embedding features to every token component (True) or to none.
    """
    unknown = [p for p in pipeline if p not in COMPONENTS]
    if unknown or not pipeline:
        raise ValueError(
            f"Unsupported pipeline components {unknown or pipeline!r}; choose from: "
            f"{', '.join(COMPONENTS)}."
        )
    if len(set(pipeline)) != len(pipeline):
        raise ValueError(f"Each component can appear once in the pipeline, got {pipeline!r}.")
    if optimize not in OPTIMIZE:
        raise ValueError(f"optimize must be one of {OPTIMIZE}, got {optimize!r}.")
    accuracy = optimize == "accuracy"
    components: dict[str, Any] = {"trf": trf_config(model, frozen, accuracy)}
    for name in pipeline:
        tok2vec = listener("reduce_first.v1" if name == "ner" else "reduce_mean.v1")
        if hybrid_features and name in TOKEN_COMPONENTS:
            tok2vec = hybrid(tok2vec)
        components[name] = component_config(name, tok2vec, accuracy)
    draft = {
        "paths": {"train": None, "dev": None},
        "system": {"gpu_allocator": "pytorch", "seed": 0},
        "nlp": {"lang": lang, "pipeline": ["trf", *pipeline], "batch_size": 64},
        "components": components,
        "corpora": {
            "train": {"@readers": "spacy.Corpus.v1", "path": "${paths.train}", "max_length": 0},
            "dev": {"@readers": "spacy.Corpus.v1", "path": "${paths.dev}", "max_length": 0},
        },
        "training": training_config(frozen, max_steps, "morphologizer" in pipeline),
    }
    config = DEFAULT_CONFIG.merge(Config(draft))
    # Fill exactly as `spacy init fill-config` does, so that it has nothing left to add.
    nlp = util.load_model_from_config(config, auto_fill=True, validate=False)
    return util.load_model_from_config(nlp.config).config


def trf_config(model: str, frozen: bool, accuracy: bool) -> dict[str, Any]:
    """The block of the shared trf component (raises if the model cannot be read)."""
    transformer_config = no_attention_dropout(model)
    return {
        "factory": "trf",
        "frozen": frozen,
        "feature_cache_mb": defaults.FROZEN_FEATURE_CACHE_MB if frozen else 0,
        # Heads learn at the optimizer's rate, the pretrained encoder at a tenth of it.
        "learn_rate_scale": 0.1,
        # The fastest backend here whose outputs agree with fp32, measured once (docs/backends.md).
        "inference": "auto",
        "model": {
            "@architectures": "spacy-trf.TransformerModel.v1",
            "name": model,
            "window": defaults.WINDOW,
            # Overlap costs compute: efficiency encodes each piece once; 16 pieces of
            # overlap scored as 32 did on EWT and CoNLL dev, none lost 0.1-0.15 points.
            "stride": defaults.STRIDE if accuracy else defaults.WINDOW,
            "get_spans": {"@span_getters": "spacy-trf.doc_spans.v1"},
            "transformer_config": {} if frozen else transformer_config,
        },
    }


def training_config(frozen: bool, max_steps: int, upos: bool) -> dict[str, Any]:
    """The [training] block: Adam with a warm-up linear schedule, spaCy's padded batcher.

    upos: whether a component sets token.pos_; if not, the tagger's POS accuracy (always 0,
    weight 0) is left out of the training table.
    """
    # Heads 1e-3 (encoder 1e-4 through learn_rate_scale) beat 5e-4 on EWT and CoNLL dev.
    learn_rate = 1e-3
    warmup = 0 if frozen else min(250, max_steps // 10)
    return {
        "accumulate_gradient": 1 if frozen else 3,
        "dropout": 0.1,
        "patience": 1600,
        "max_epochs": 0,
        "max_steps": max_steps,
        "eval_frequency": 200,
        "seed": "${system.seed}",
        "gpu_allocator": "${system.gpu_allocator}",
        "optimizer": {
            "@optimizers": "Adam.v1",
            "beta1": 0.9,
            "beta2": 0.999,
            "L2_is_weight_decay": True,
            "L2": 0.01,
            "grad_clip": 1.0,
            "use_averages": False,
            "eps": 1e-8,
            "learn_rate": {
                "@schedules": "warmup_linear.v1",
                "warmup_steps": warmup,
                "total_steps": max_steps,
                "initial_rate": learn_rate,
            },
        },
        "batcher": {
            "@batchers": "spacy.batch_by_padded.v1",
            "discard_oversize": True,
            "size": 2000,
            "buffer": 256,
            "get_length": None,
        },
        "logger": {"@loggers": "spacy.ConsoleLogger.v1", "progress_bar": True},
        "score_weights": {} if upos else {"pos_acc": None},
    }


def write_config(config: Config, path: Path) -> None:
    """Write atomically: a failed run leaves no half-written file."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config.to_str(), encoding="utf8")
    tmp.replace(path)
