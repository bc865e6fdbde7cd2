"""``spacy-trf migrate``: spacy-transformers configs and saved pipelines as spacy-trf ones, with no
spacy-transformers installed.

- The config: ``migrate_config.py``.
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
from transformers import AutoConfig, AutoModel

from ..encoder.loading import ModelLoadError, load_tokenizer, max_sequence_length, save_hf
from ..pieces import PieceTokenizer
from .migrate_config import (
    ALIGNMENTS,
    ST_LISTENER,
    MigrationError,
    encoder_names,
    listener_for,
    migrate_config,
    read_config,
    tok2vec_encoders,
)

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

    def lines(self) -> list[str]:
        """The report as the command line prints it."""
        out = [f"Note: {note}" for note in self.notes] + [f"Alignment: {self.alignment}"]
        if self.tokens_compared:
            moved = ", ".join(f"{k} {v}" for k, v in self.annotations_changed.items()) or "none"
            out.append(
                f"On {self.sample_size} texts, {self.tokens_changed} of {self.tokens_compared} "
                "tokens get other pieces than spacy-transformers gave them; tokens whose "
                f"predictions changed: {moved}; largest category score change "
                f"{self.max_cats_change:.2g}. Fine-tune to adapt the components (spacy train "
                "with [components.NAME] source = OUTPUT)."
            )
        return [*out, f"Saved {self.output}."]


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
    try:
        tokenizer = load_tokenizer(str(tok_dir), {})
    except ModelLoadError as err:
        raise MigrationError(f"{where}: {err}") from err
    save_hf(model.eval(), tokenizer, path)
    shutil.rmtree(tok_dir)
    notes = (
        [f"{where}: saved buffers {', '.join(stale)} left out (recomputed by the model)."]
        if stale
        else []
    )
    limit = max_sequence_length(model, tokenizer)
    n_special = PieceTokenizer(tokenizer).template.n_special
    return (None if limit is None else limit - n_special), notes


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
        # spaCy's from_disk matches excludes by the name before the dot ("config", "meta").
        nlp.from_disk(source, exclude=["config", *names])  # meta, vocab, tokenizer
        _update_meta(nlp.meta)
        for name in encoders:
            cast(Any, nlp.get_pipe(name)).initialize()  # from the HF directory written above
        for name, blocks in listening.items():
            _load_listening(nlp.get_pipe(name), source / name, blocks, name)
        # The other components load as saved, last: some (an entity ruler's phrase patterns)
        # run the components before them while loading.
        loaded = ["config", "meta", "vocab", "tokenizer", *encoders, *listening]
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
            if listener_for(block, encoders) is not None:
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
    if model in roots:
        raise MigrationError(
            f"components.{name}: its model is a listener alone, with no layers of its own to "
            "migrate."
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
    if any(n.has_param(p) for s in stand_ins for n in s.walk() for p in n.param_names):
        raise MigrationError(
            f"components.{name}: its listener's pooling layer has weights, which spacy-trf's "
            "listener cannot take over; use a reduce_* pooling layer and retrain the component."
        )


def _update_meta(meta: dict[str, Any]) -> None:
    """The saved meta for this spaCy and spacy-trf: spacy-transformers no longer required."""
    meta["spacy_version"] = util.get_minor_version_range(spacy.__version__)
    meta.pop("spacy_git_version", None)
    meta["requirements"] = [
        r for r in meta.get("requirements", []) if not r.startswith("spacy-transformers")
    ]


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
        report.tokens_changed += tokens_with_other_pieces(a, b)
        arr_a, arr_b = a.to_array(list(COMPARED.values())), b.to_array(list(COMPARED.values()))
        for i, key in enumerate(COMPARED):
            changed = int((arr_a[:, i] != arr_b[:, i]).sum())
            report.annotations_changed[key] = report.annotations_changed.get(key, 0) + changed
        for cat, score in a.cats.items():
            diff = abs(score - b.cats.get(cat, 0.0))
            report.max_cats_change = max(report.max_cats_change, diff)
    report.annotations_changed = {k: v for k, v in report.annotations_changed.items() if v}


def tokens_with_other_pieces(a: Doc, b: Doc) -> int:
    """How many tokens of two encodings of the same text are aligned to other pieces."""
    ta, tb = a._.trf, b._.trf
    if ta is None or tb is None:
        return 0
    la, lb = np.asarray(ta.align.lengths), np.asarray(tb.align.lengths)
    sa = np.split(np.asarray(ta.align.dataXd), np.cumsum(la)[:-1])
    sb = np.split(np.asarray(tb.align.dataXd), np.cumsum(lb)[:-1])
    return sum(not np.array_equal(x, y) for x, y in zip(sa, sb, strict=True))
