"""``spacy-trf migrate``: spacy-transformers configs and saved pipelines as spacy-trf ones, with no
spacy-transformers installed.

- ``transformer`` components (``spacy-transformers.TransformerModel.v1/v2/v3``) and ``tok2vec``
  components on ``spacy-transformers.Tok2VecTransformer.v1/v2/v3`` become ``trf`` components
  (``spacy-trf.TransformerModel.v2``) of the same name; strided spans of tokens become strided
  windows of pieces, never truncated.
- ``spacy-transformers.TransformerListener.v1`` (and spaCy's ``Tok2VecListener`` on a migrated
  ``tok2vec``) become ``spacy-trf.TransformerListener.v1`` with the same pooling and grad_factor.
- Saved weights: the encoder's state dict (``torch.save`` bytes inside Thinc msgpack) is read with
  ``torch.load(..., weights_only=True)`` only, never unpickled, and becomes a plain HF directory;
  each downstream component keeps its weights, moved layer by layer into the migrated model.
- Pieces are aligned to tokens as spacy-transformers did (``spacy-trf.st_compat_alignment.v1``),
  since the downstream components learnt from those rows, unless ``exact_alignment``.
"""

import copy
import io
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import spacy
import srsly
import torch
from spacy import util
from spacy.attrs import DEP, ENT_IOB, ENT_TYPE, HEAD, MORPH, POS, TAG
from spacy.language import Language
from spacy.tokens import Doc
from thinc.api import Config, Model, chain
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .. import defaults
from ..encoder.loading import max_sequence_length, save_hf
from ..pieces import PieceTokenizer

ST = "spacy-transformers."
ST_MODELS = tuple(f"{ST}TransformerModel.v{i}" for i in (1, 2, 3))
ST_TOK2VECS = tuple(f"{ST}Tok2VecTransformer.v{i}" for i in (1, 2, 3))
ST_LISTENER = f"{ST}TransformerListener.v1"
SPACY_LISTENERS = ("spacy.Tok2VecListener.v1",)
ALIGNMENTS = {False: "spacy-trf.st_compat_alignment.v1", True: "spacy-trf.exact_alignment.v1"}
MODEL_KEYS = {"@architectures", "name", "get_spans", "tokenizer_config", "transformer_config",
              "mixed_precision", "grad_scaler_config", "pooling", "grad_factor"}  # fmt: skip
# Compared between the two alignments by `migrate --exact-alignment`.
COMPARED = {"tag": TAG, "pos": POS, "morph": MORPH, "head": HEAD, "dep": DEP,
            "ent_iob": ENT_IOB, "ent_type": ENT_TYPE}  # fmt: skip
SAMPLE_TEXTS = [
    "On Monday, Nordlys Energy announced that its chief executive will open a centre in Oslo.",
    "I can't believe it's already December; the trains were late again this morning.",
    "The committee approved the $4.5 million budget after a two-hour debate.",
    "She emailed dr. Okafor at 9:30 a.m. about the results of the MRI scan.",
    "Prices rose 3% in March, while wages stayed flat across most of the region.",
    "Honestly?? That was the best concert I've been to in years!!",
    "The U.K.-based start-up raised funds from investors in Berlin and São Paulo.",
    "Please send the signed forms back to us by Friday, 12 December.",
]


class MigrationError(ValueError):
    """A spacy-transformers setting or saved pipeline that cannot be migrated."""


@dataclass
class MigrationReport:
    """What ``migrate`` wrote and what it could not carry over.

    notes: settings carried over differently or dropped, one line each.
    tokens_changed / tokens_compared: with ``exact_alignment`` (pipelines), tokens of the sample
        texts whose pieces differ between spacy-transformers' alignment and the exact one.
    annotations_changed: per token attribute (tag, pos, morph, head, dep, ent_iob, ent_type),
        sample tokens whose prediction changed; max_cats_change: largest change of a category
        score.
    """

    output: Path
    config: Config
    notes: list[str] = field(default_factory=list)
    alignment: str = ALIGNMENTS[False]
    tokens_changed: int = 0
    tokens_compared: int = 0
    annotations_changed: dict[str, int] = field(default_factory=dict)
    max_cats_change: float = 0.0
    sample_size: int = 0


def migrate(
    source: str | Path,
    output: str | Path,
    exact_alignment: bool = False,
    texts: list[str] | None = None,
) -> MigrationReport:
    """Migrate a spacy-transformers config file or saved pipeline directory to spacy-trf.

    source: a config.cfg (writes a config to ``output``) or a pipeline directory (writes a
        pipeline directory to ``output``, which must not exist or be empty).
    exact_alignment: use spacy-trf's exact alignment instead of spacy-transformers'; for a
        pipeline, the report then says how many tokens' pieces change and how far predictions
        move on ``texts`` (default: a few built-in English sentences).
    """
    source, output = Path(source), Path(output)
    if source.is_dir():
        return migrate_pipeline(source, output, exact_alignment, texts)
    if not source.is_file():
        raise MigrationError(
            f"{source} does not exist: give a spacy-transformers config.cfg or a pipeline "
            "directory saved by spacy-transformers."
        )
    config, notes = migrate_config(read_config(source), exact_alignment)
    if output.is_dir():
        raise MigrationError(f"{output} is a directory: give the path of the config to write.")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        config.to_disk(tmp)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return MigrationReport(output, config, notes, ALIGNMENTS[exact_alignment])


def read_config(path: Path) -> Config:
    try:
        return Config().from_disk(path, interpolate=False)
    except Exception as err:
        raise MigrationError(f"Could not read {path} as a spaCy config: {err}") from err


# Configs ------------------------------------------------------------------------------------


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
        ours = _listener_for(block, encoders, where)
        if ours is not None:
            return ours
        return {k: _migrate_block(v, encoders, f"{where}.{k}") for k, v in block.items()}
    return block


def _listener_for(
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


# Saved pipelines ------------------------------------------------------------------------------


def read_st_encoder(model_bytes: bytes, where: str) -> tuple[dict[str, Any], dict, dict]:
    """The HF config, state dict and tokenizer files a spacy-transformers encoder saved.

    Its Thinc msgpack holds, in the HF shim's bytes, the config as a dict, the state dict as
    ``torch.save`` bytes (loaded with ``weights_only=True``: tensors only, no code) and the
    tokenizer's files.
    """
    try:
        msg = srsly.msgpack_loads(model_bytes)
        shims = [srsly.msgpack_loads(b) for node in msg["shims"] for b in node]
    except Exception as err:
        raise MigrationError(f"{where} is not a model saved by spacy-transformers: {err}") from err
    found = [s for s in shims if isinstance(s, dict) and {"config", "state", "tokenizer"} <= set(s)]
    if len(found) != 1 or not found[0]["config"]:
        raise MigrationError(
            f"{where} holds no spacy-transformers encoder weights (was the pipeline saved after "
            "initialization?)."
        )
    shim = found[0]
    try:
        state = torch.load(io.BytesIO(shim["state"]), map_location="cpu", weights_only=True)
    except Exception as err:
        raise MigrationError(
            f"{where}: the encoder's state dict does not load as plain tensors "
            f"(torch.load(weights_only=True) refused it: {err}); spacy-trf never unpickles code."
        ) from err
    files = {k: v for k, v in shim["tokenizer"].items() if isinstance(v, bytes)}
    return shim["config"], state, files


def write_hf_dir(
    config: dict[str, Any], state: dict, files: dict[str, bytes], path: Path, where: str
) -> tuple[int | None, list[str]]:
    """Write the encoder as a plain HF directory; return its content-piece limit per window
    and notes on saved buffers the model no longer keeps."""
    tok_dir = path.with_name(path.name + "-tokenizer")
    tok_dir.mkdir(parents=True)
    for fname, data in files.items():
        (tok_dir / Path(fname).name).write_bytes(data)
    cfg = dict(config)
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise MigrationError(f"{where}: the saved HF config names no model_type.")
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **cfg))
    # Older transformers saved buffers (e.g. embeddings.position_ids) that are no longer kept.
    buffers = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    stale = sorted(set(state) & buffers)
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k not in buffers}, strict=False
    )
    if missing or unexpected:
        raise MigrationError(
            f"{where}: the saved weights do not fit {type(model).__name__} (missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})."
        )
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if not getattr(tokenizer, "is_fast", False):
        raise MigrationError(f"{where}: the saved tokenizer is not a fast tokenizer.")
    save_hf(model.eval(), tokenizer, path)
    shutil.rmtree(tok_dir)
    notes = [f"{where}: saved buffers {', '.join(stale)} left out (recomputed by the model)."]
    limit = max_sequence_length(model, tokenizer)
    n_special = PieceTokenizer(tokenizer).template.n_special
    return (None if limit is None else limit - n_special), notes if stale else []


def migrate_pipeline(
    source: Path, output: Path, exact_alignment: bool = False, texts: list[str] | None = None
) -> MigrationReport:
    """Migrate a pipeline directory saved by spacy-transformers 1.x (see ``migrate``)."""
    if not (source / "config.cfg").is_file():
        raise MigrationError(f"{source} has no config.cfg: is it a saved spaCy pipeline?")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise MigrationError(f"{output} exists and is not empty: give a new directory.")
    if texts is not None and not texts:
        raise MigrationError("No texts to compare the alignments on: give at least one text.")
    st_config = read_config(source / "config.cfg")
    encoders = encoder_names(st_config)
    listening = _listening_components(st_config)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Staged beside the output, so that it appears whole, by one rename.
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp_dir:
        tmp = Path(tmp_dir)
        limits, hf_dirs, buffer_notes = {}, {}, []
        for name in encoders:
            where = str(source / name / "model")
            if not (source / name / "model").is_file():
                raise MigrationError(f"{where} is missing: the pipeline was not saved whole.")
            parts = read_st_encoder((source / name / "model").read_bytes(), where)
            hf_dirs[name] = tmp / "hf" / name
            limit, found = write_hf_dir(*parts, hf_dirs[name], where)
            buffer_notes += found
            if limit is not None:
                limits[name] = limit
        config, notes = migrate_config(st_config, exact_alignment, limits)
        notes += buffer_notes
        build = Config(copy.deepcopy(dict(config)))
        for name in encoders:
            build["components"][name]["model"]["name"] = str(hf_dirs[name])
        nlp = util.load_model_from_config(build, auto_fill=True, validate=True)
        names = nlp.component_names  # disabled ones too
        nlp.from_disk(source, exclude=["config.cfg", *names])  # meta, vocab, tokenizer
        for name in encoders:
            cast(Any, nlp.get_pipe(name)).initialize()  # from the HF directory written above
        for name, blocks in listening.items():
            _load_listening(nlp.get_pipe(name), source / name, blocks, name)
        # The other components load as saved, last: some (an entity ruler's phrase patterns)
        # run the components before them while loading.
        loaded = ["config.cfg", "meta.json", "vocab", "tokenizer", *encoders, *listening]
        nlp.from_disk(source, exclude=loaded)
        staged = tmp / "pipeline"
        nlp.to_disk(staged)
        config = nlp.config.copy()  # filled in, with the encoders' names as saved
        for name in encoders:
            config["components"][name]["model"]["name"] = st_config["components"][name]["model"][
                "name"
            ]
        config.to_disk(staged / "config.cfg")
        report = MigrationReport(output, config, notes, ALIGNMENTS[exact_alignment])
        migrated = spacy.load(staged)  # the migrated pipeline must load as users will load it
        if exact_alignment:
            _compare_alignments(migrated, staged, encoders, texts or SAMPLE_TEXTS, report)
        else:
            list(migrated.pipe(texts or SAMPLE_TEXTS[:2]))
        if output.exists():
            output.rmdir()
        staged.replace(output)
    return report


def _listening_components(config: Config) -> dict[str, list[dict[str, Any]]]:
    """Components whose model holds listeners that migrate to ours -> those listeners' blocks."""
    encoders = tok2vec_encoders(config)

    def found(block: Any) -> Iterator[dict[str, Any]]:
        if isinstance(block, dict):
            if _listener_for(block, encoders) is not None:
                yield block
                return
            for value in block.values():
                yield from found(value)

    names = encoder_names(config)
    out = {
        n: list(found(c.get("model"))) for n, c in config["components"].items() if n not in names
    }
    return {n: blocks for n, blocks in out.items() if blocks}


def _load_listening(comp: Any, path: Path, blocks: list[dict[str, Any]], name: str) -> None:
    """Load a component that listened to a spacy-transformers encoder: its cfg as saved, its
    weights read by Thinc into its migrated model with each listener swapped for a stand-in of
    spacy-transformers' layer structure (dims, params, attrs and shims of the other layers)."""
    comp.from_disk(path, exclude=["model", "vocab"])
    model: Model = comp.model
    roots = [n for n in model.walk() if n.name == TOKEN_VECTORS]
    if len(roots) != len(blocks):
        raise MigrationError(
            f"components.{name}: {len(blocks)} listeners in its config but {len(roots)} in its "
            "migrated model."
        )
    names = [node.name for node in model.walk()]
    stand_ins = [_stand_in(block) for block in blocks]
    for root, stand_in in zip(roots, stand_ins, strict=True):
        model.replace_node(root, stand_in)
    try:
        model.from_bytes((path / "model").read_bytes())
    except Exception as err:
        raise MigrationError(
            f"{path / 'model'} does not fit its config's architecture (was it saved by "
            f"spacy-transformers with this config?): {err}"
        ) from err
    finally:
        for root, stand_in in zip(roots, stand_ins, strict=True):
            model.replace_node(stand_in, root)
    for node, node_name in zip(model.walk(), names, strict=True):
        node.name = node_name


TOKEN_VECTORS = "spacy-trf.TokenVectors"  # the root of our listener's layers (tokens_from)


def _stand_in(block: dict[str, Any]) -> Model:
    """Layers shaped as spacy-transformers' listener (or spaCy's Tok2VecListener) saved them."""
    if block.get("@architectures") == ST_LISTENER:
        pooling_cfg = block.get("pooling", {"@layers": "reduce_mean.v1"})
        pooling = util.registry.resolve(Config({"p": pooling_cfg}))["p"]
        return chain(
            Model("transformer-listener", _never_run, dims={"nO": None}),
            Model("trfs2arrays", _never_run, layers=[pooling]),
        )
    return Model("tok2vec-listener", _never_run, dims={"nO": None})


def _never_run(model: Model, X: Any, is_train: bool) -> tuple[Any, Any]:
    raise NotImplementedError("A stand-in for a saved layer structure; never run.")


def _compare_alignments(
    exact: Language, path: Path, encoders: list[str], texts: list[str], report: MigrationReport
) -> None:
    """How far the exact alignment moves tokens' pieces and predictions from the compat one."""
    overrides = {
        f"components.{n}.model.alignment": {"@alignments": ALIGNMENTS[False]} for n in encoders
    }
    compat = spacy.load(path, config=overrides)
    a_docs, b_docs = list(compat.pipe(texts)), list(exact.pipe(texts))
    report.sample_size = len(texts)
    for a, b in zip(a_docs, b_docs, strict=True):
        report.tokens_compared += len(a)
        report.tokens_changed += _tokens_with_other_pieces(a, b)
        arr_a, arr_b = a.to_array(list(COMPARED.values())), b.to_array(list(COMPARED.values()))
        for i, key in enumerate(COMPARED):
            changed = int((arr_a[:, i] != arr_b[:, i]).sum())
            report.annotations_changed[key] = report.annotations_changed.get(key, 0) + changed
        for cat, score in a.cats.items():
            diff = abs(score - b.cats.get(cat, 0.0))
            report.max_cats_change = max(report.max_cats_change, diff)
    report.annotations_changed = {k: v for k, v in report.annotations_changed.items() if v}


def _tokens_with_other_pieces(a: Doc, b: Doc) -> int:
    ta, tb = a._.trf, b._.trf
    if ta is None or tb is None:
        return 0
    la, lb = np.asarray(ta.align.lengths), np.asarray(tb.align.lengths)
    sa = np.split(np.asarray(ta.align.dataXd), np.cumsum(la)[:-1])
    sb = np.split(np.asarray(tb.align.dataXd), np.cumsum(lb)[:-1])
    return sum(not np.array_equal(x, y) for x, y in zip(sa, sb, strict=True))
