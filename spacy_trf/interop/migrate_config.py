"""spacy-transformers configs as spacy-trf configs (``spacy-trf migrate`` on a config.cfg).

``transformer`` components and ``tok2vec`` components on a spacy-transformers encoder become
``trf`` components; spacy-transformers' listeners (and spaCy's on a migrated tok2vec) become
``spacy-trf.TransformerListener.v1``; every setting that does not carry over is noted.
"""

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thinc.api import Config

from .. import defaults

ST = "spacy-transformers."
ST_MODELS = tuple(f"{ST}TransformerModel.v{i}" for i in (1, 2, 3))
ST_TOK2VECS = tuple(f"{ST}Tok2VecTransformer.v{i}" for i in (1, 2, 3))
ST_LISTENER = f"{ST}TransformerListener.v1"
SPACY_LISTENERS = ("spacy.Tok2VecListener.v1",)
ALIGNMENTS = {False: "spacy-trf.st_compat_alignment.v1", True: "spacy-trf.exact_alignment.v1"}
MODEL_KEYS = {"@architectures", "name", "get_spans", "tokenizer_config", "transformer_config",
              "mixed_precision", "grad_scaler_config", "pooling", "grad_factor"}  # fmt: skip


class MigrationError(ValueError):
    """A spacy-transformers setting or saved pipeline that cannot be migrated."""


def read_config(path: Path) -> Config:
    try:
        return Config().from_disk(path, interpolate=False)
    except Exception as err:
        raise MigrationError(f"Could not read {path} as a spaCy config: {err}") from err


def migrate_config(
    config: Config, exact_alignment: bool = False, limits: dict[str, int] | None = None
) -> tuple[Config, list[str]]:
    """The spacy-trf equivalent of a spacy-transformers config, and notes on what changed.

    limits: per encoder component, the most content pieces its model reads at once (known for
        saved pipelines); windows are capped to it.
    """
    config = Config(copy.deepcopy(dict(config)))
    notes: list[str] = []
    components = config.get("components", {})
    encoders = tok2vec_encoders(config)
    names = encoder_names(config)
    for name in names:
        components[name] = _trf_component(name, components[name], exact_alignment, limits, notes)
    for name, comp in components.items():
        if name not in names and isinstance(comp.get("model"), dict):
            comp["model"] = _migrate_block(comp["model"], encoders, f"components.{name}.model")
    left = list(_st_paths(dict(config)))
    if left:
        raise MigrationError(
            "These settings use spacy-transformers functions that spacy-trf cannot migrate: "
            + "; ".join(left)
            + ". Replace them (e.g. an encoder inside a component: move it into a 'transformer' "
            "component with listeners) and run migrate again."
        )
    return config, notes


def _arch(block: Any) -> str | None:
    return block.get("@architectures") if isinstance(block, dict) else None


def encoder_names(config: Config) -> list[str]:
    """The components that become trf components: transformer ones and tok2vec ones on a
    spacy-transformers encoder."""
    return [
        name
        for name, comp in config.get("components", {}).items()
        if comp.get("factory") == "transformer"
        or (comp.get("factory") == "tok2vec" and _arch(comp.get("model")) in ST_TOK2VECS)
    ]


def tok2vec_encoders(config: Config) -> dict[str, dict[str, Any]]:
    """Migrated tok2vec components -> the pooling settings their listeners take over."""
    components = config.get("components", {})
    return {
        name: {
            "pooling": components[name]["model"].get("pooling", {"@layers": "reduce_mean.v1"}),
            "grad_factor": components[name]["model"].get("grad_factor", 1.0),
        }
        for name in encoder_names(config)
        if components[name].get("factory") == "tok2vec"
    }


def _trf_component(
    name: str,
    comp: dict[str, Any],
    exact_alignment: bool,
    limits: dict[str, int] | None,
    notes: list[str],
) -> dict[str, Any]:
    st_model = comp.get("model", {})
    arch = _arch(st_model)
    if arch not in ST_MODELS + ST_TOK2VECS:
        raise MigrationError(
            f"components.{name} uses {arch!r}, not one of {', '.join(ST_MODELS + ST_TOK2VECS)}."
        )
    where = f"components.{name}"
    if not isinstance(st_model.get("name"), str):
        raise MigrationError(f"{where}.model has no name: set the model's hub id or directory.")
    limit = (limits or {}).get(name)
    window, stride, get_spans = _windows(st_model.get("get_spans") or {}, limit, where, notes)
    tokenizer_config = dict(st_model.get("tokenizer_config", {}))
    if tokenizer_config.pop("use_fast", True) is False:
        notes.append(
            f"{where}: use_fast = false dropped: spacy-trf always uses the fast tokenizer, whose "
            "pieces and alignment differ from the slow one's, so the downstream components read "
            "other rows than they were trained on: migrate with --exact-alignment and fine-tune."
        )
    transformer_config = dict(st_model.get("transformer_config", {}))
    outputs = {
        key: bool(transformer_config.pop(key))
        for key in ("output_hidden_states", "output_attentions")
        if key in transformer_config
    }
    if outputs:
        notes.append(
            f"{where}.model.transformer_config: {', '.join(outputs)} became the architecture's "
            "own settings (spacy-trf keeps them on doc._.trf)."
        )
    for key in sorted(set(st_model) - MODEL_KEYS):
        notes.append(f"{where}.model.{key} has no spacy-trf equivalent and was dropped.")
    if st_model.get("grad_scaler_config"):
        notes.append(
            f"{where}.model.grad_scaler_config dropped: spacy-trf's mixed_precision picks bf16 "
            "or scales fp16 gradients itself."
        )
    setter = comp.get("set_extra_annotations", {}).get("@annotation_setters")
    if setter not in (None, f"{ST}null_annotation_setter.v1"):
        notes.append(
            f"{where}.set_extra_annotations ({setter}) dropped: spacy-trf stores the encoder's "
            "output on doc._.trf (spacy-transformers used doc._.trf_data)."
        )
    if arch in ST_TOK2VECS:
        notes.append(
            f"{where}: the tok2vec component on {arch} became a trf component; its pooling and "
            "grad_factor moved to the listeners."
        )
    if "max_batch_items" in comp:
        notes.append(
            f"{where}: max_batch_items = {comp['max_batch_items']} became max_batch_pieces "
            "(padded pieces per forward call, windows sorted by length)."
        )
    new = {
        "factory": "trf",
        "max_batch_pieces": comp.get("max_batch_items", defaults.MAX_BATCH_PIECES),
        "mixed_precision": bool(st_model.get("mixed_precision", False)),
        "model": {
            "@architectures": "spacy-trf.TransformerModel.v2",
            "name": st_model["name"],
            "window": window,
            "stride": stride,
            "get_spans": get_spans,
            "tokenizer_config": tokenizer_config,
            "transformer_config": transformer_config,
            **outputs,
            "alignment": {"@alignments": ALIGNMENTS[exact_alignment]},
        },
    }
    return new


def _windows(
    spans: dict[str, Any], limit: int | None, where: str, notes: list[str]
) -> tuple[int, int, dict[str, Any]]:
    getter = spans.get("@span_getters")
    doc_spans = {"@span_getters": "spacy-trf.doc_spans.v1"}
    if getter == f"{ST}strided_spans.v1":
        st_window, st_stride = int(spans.get("window", 128)), int(spans.get("stride", 96))
        window = min(st_window, limit) if limit else st_window
        stride = max(1, min(window, round(st_stride * window / st_window)))
        notes.append(
            f"{where}: strided spans of {st_window} tokens every {st_stride} became windows of "
            f"{window} pieces every {stride} (a token has one or more pieces; windows are never "
            "truncated)."
        )
        return window, stride, doc_spans
    if getter == f"{ST}sent_spans.v1":
        spans_cfg = {"@span_getters": "spacy-trf.sent_spans.v1"}
    elif getter == f"{ST}doc_spans.v1":
        spans_cfg = doc_spans
    else:
        raise MigrationError(
            f"{where}.model.get_spans uses {getter!r}, which spacy-trf cannot migrate: use "
            "spacy-transformers.strided_spans.v1, sent_spans.v1 or doc_spans.v1, or register "
            "your own spacy-trf span getter."
        )
    # spacy-transformers truncated a span at the model's limit; spacy-trf windows it instead.
    window = limit or defaults.WINDOW
    overlap = defaults.WINDOW - defaults.STRIDE
    stride = window - overlap if window > 2 * overlap else window
    notes.append(
        f"{where}: spacy-transformers cut {getter.split('.')[1]} longer than the model's limit; "
        f"spacy-trf reads them whole in windows of {window} pieces every {stride}."
    )
    return window, stride, spans_cfg


def _migrate_block(block: Any, encoders: dict[str, dict[str, Any]], where: str) -> Any:
    """A component's model settings with spacy-transformers' listeners replaced by ours."""
    if isinstance(block, dict):
        ours = listener_for(block, encoders, where)
        if ours is not None:
            return ours
        return {k: _migrate_block(v, encoders, f"{where}.{k}") for k, v in block.items()}
    return block


def listener_for(
    block: dict[str, Any], encoders: dict[str, dict[str, Any]], where: str = ""
) -> dict[str, Any] | None:
    """Our listener for a spacy-transformers listener, or a spaCy Tok2VecListener on a migrated
    tok2vec; None for any other block (e.g. a Tok2VecListener on a CNN tok2vec)."""
    arch = block.get("@architectures")
    if arch == ST_LISTENER:
        return _listener(block.get("pooling", {"@layers": "reduce_mean.v1"}),
                         block.get("grad_factor", 1.0), block.get("upstream", "*"))  # fmt: skip
    if arch in SPACY_LISTENERS and encoders:
        upstream = block.get("upstream", "*")
        if upstream == "*" and len(encoders) > 1:
            raise MigrationError(
                f"{where}: a Tok2VecListener with upstream '*' and several migrated tok2vec "
                f"components ({', '.join(encoders)}): name its upstream."
            )
        name = next(iter(encoders)) if upstream == "*" else upstream
        if name in encoders:
            return _listener(encoders[name]["pooling"], encoders[name]["grad_factor"], name)
    return None


def _listener(pooling: Any, grad_factor: Any, upstream: str) -> dict[str, Any]:
    return {
        "@architectures": "spacy-trf.TransformerListener.v1",
        "grad_factor": grad_factor,
        "layers": "last",
        "upstream": upstream,
        "pooling": copy.deepcopy(pooling),
    }


def _st_paths(block: Any, where: str = "") -> Iterator[str]:
    """Every setting still naming a spacy-transformers function."""
    if isinstance(block, dict):
        for key, value in block.items():
            here = f"{where}.{key}" if where else str(key)
            if key.startswith("@") and isinstance(value, str) and value.startswith(ST):
                yield f"{where} ({value})"
            else:
                yield from _st_paths(value, here)
