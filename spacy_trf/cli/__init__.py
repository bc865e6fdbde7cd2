"""The ``spacy-trf`` command line (also ``python -m spacy_trf``)."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from .init_config import COMPONENTS, DEFAULT_MODEL, OPTIMIZE, make_config, write_config
from .plain_help import PlainHelp

T = TypeVar("T")

app = typer.Typer(
    name="spacy-trf",
    help="Hugging Face transformer encoders in spaCy pipelines.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


MODEL_OPTION: dict[str, Any] = {
    "metavar": "NAME_OR_DIR",
    "show_default": False,
    "help": "Hugging Face hub id or local model directory. Default: the shipped MiniLM "
    "(sentence-transformers/all-MiniLM-L6-v2).",
}


def _quiet_hub() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _on_ray(run: Callable[[Any], T]) -> T:
    """``run(spacy_trf.distributed)``; a missing ``ray`` extra or a bad input exits with one
    line naming it."""
    _quiet_hub()
    try:
        from .. import distributed
    except ImportError as err:
        typer.echo(f"Error: {err}. Install the extra: pip install 'spacy-trf[ray]'", err=True)
        raise typer.Exit(1) from err
    try:
        return run(distributed)
    except (ValueError, FileNotFoundError, ConnectionError, RuntimeError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from err


def _split(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


@app.command("init-config", cls=PlainHelp, short_help="Write a training config for trf pipelines.")
def init_config_cli(
    output: Path = typer.Argument(..., metavar="OUTPUT", help="Where to write the config (.cfg)."),
    lang: str = typer.Option("en", "--lang", "-l", metavar="LANG", help="spaCy language code."),
    pipeline: str = typer.Option(
        "tagger,parser,ner",
        "--pipeline",
        "-p",
        metavar="NAMES",
        help=f"Comma-separated: {', '.join(COMPONENTS)}.",
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", **MODEL_OPTION),
    optimize: str = typer.Option(
        "efficiency", "--optimize", "-o", metavar="GOAL", help=f"One of: {', '.join(OPTIMIZE)}."
    ),
    frozen: bool = typer.Option(False, "--frozen", help="Freeze the encoder; train heads only."),
    hybrid: bool = typer.Option(
        True,
        "--hybrid/--no-hybrid",
        help="Add hash-embedding features (shape, affixes) to every token head, or to none.",
    ),
) -> None:
    """Write a complete training config: spaCy components listening to one trf encoder."""
    try:
        config = make_config(
            _split(pipeline),
            lang=lang,
            model=model,
            optimize=optimize,
            frozen=frozen,
            hybrid_features=hybrid,
        )
    except (ValueError, OSError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from err
    write_config(config, output)
    typer.echo(
        f"Saved config to {output}. Train with:\n"
        f"python -m spacy train {output} --paths.train TRAIN.spacy --paths.dev DEV.spacy"
    )


@app.command(
    "quickstart", cls=PlainHelp, short_help="Train, evaluate and save a pipeline, end to end."
)
def quickstart_cli(
    output: Path = typer.Option(
        Path("quickstart_output"),
        "--output",
        "-o",
        metavar="DIR",
        help="Where to save the data, config and pipelines (model-best, model-last).",
    ),
    train: Path | None = typer.Option(
        None,
        "--train",
        metavar="FILE",
        help="Training data: .spacy, .conllu, IOB (.iob/.conll/.txt) or .jsonl (docs/usage.md). "
        "Default: the shipped sample.",
    ),
    dev: Path | None = typer.Option(
        None, "--dev", metavar="FILE", help="Development data, in the same formats."
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", **MODEL_OPTION),
    pipeline: str = typer.Option(
        "",
        "--pipeline",
        "-p",
        metavar="NAMES",
        help="Comma-separated components. Default: those the annotations call for.",
    ),
    max_steps: int = typer.Option(250, "--max-steps", metavar="N", help="Training steps."),
    eval_frequency: int = typer.Option(
        50, "--eval-frequency", metavar="N", help="Steps between dev evaluations."
    ),
    frozen: bool = typer.Option(False, "--frozen", help="Freeze the encoder; train heads only."),
    text: str | None = typer.Option(
        None, "--text", metavar="TEXT", help="Text to annotate at the end."
    ),
) -> None:
    """Train a pipeline (default: tagger + ner + textcat on a shipped sample), print dev
    scores, save it and annotate a text."""
    _quiet_hub()
    from .quickstart import quickstart

    try:
        quickstart(
            output,
            train_path=train,
            dev_path=dev,
            model=model,
            pipeline=_split(pipeline) or None,
            max_steps=max_steps,
            eval_frequency=eval_frequency,
            frozen=frozen,
            text=text,
        )
    except (ValueError, OSError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from err


@app.command("export-onnx", cls=PlainHelp, short_help="Copy a pipeline to run on ONNX Runtime.")
def export_onnx_cli(
    pipeline: str = typer.Argument(
        ..., metavar="PIPELINE", help="Saved pipeline directory or package name."
    ),
    output: Path = typer.Argument(
        ..., metavar="OUTPUT", help="New directory for the ONNX pipeline."
    ),
    component: str = typer.Option(
        "", "--component", "-c", metavar="NAMES", help="trf components. Default: every one."
    ),
    text: str = typer.Option(
        "", "--text", metavar="TEXT", help="Text to compare PyTorch and ONNX outputs on."
    ),
) -> None:
    """Save a copy of a pipeline whose trf encoders run on ONNX Runtime (model.onnx beside the
    weights; inference = "onnx" in its config)."""
    _quiet_hub()
    from .export_onnx import export_onnx

    try:
        export_onnx(pipeline, output, _split(component) or None, text)
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from err


@app.command(
    "export-hf", cls=PlainHelp, short_help="Save a component as a Hugging Face model directory."
)
def export_hf_cli(
    pipeline: str = typer.Argument(
        ..., metavar="PIPELINE", help="Saved pipeline directory or package name."
    ),
    output: Path = typer.Argument(..., metavar="OUTPUT", help="Directory for the HF model."),
    component: str = typer.Option(
        ...,
        "--component",
        "-c",
        metavar="NAME",
        help="tagger, morphologizer, textcat(_multilabel) on a trf encoder, or an hf_* component.",
    ),  # fmt: skip
) -> None:
    """Save a component trained on a trf encoder as an AutoModelForTokenClassification or
    AutoModelForSequenceClassification directory (encoder, head, id2label, tokenizer) that
    transformers.pipeline loads without spacy-trf."""
    _quiet_hub()
    from ..interop import export_hf

    try:
        report = export_hf(pipeline, output, component)
    except (ValueError, OSError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from err
    for note in report.notes:
        typer.echo(f"Note: {note}")
    typer.echo(
        f"Saved {report.hf_class} with {len(report.labels)} labels to {report.output}. Load it "
        f'with transformers.pipeline("token-classification" or "text-classification", '
        f'model="{report.output}").'
    )


@app.command(
    "migrate", cls=PlainHelp, short_help="Convert a spacy-transformers config or pipeline."
)
def migrate_cli(
    source: Path = typer.Argument(
        ..., metavar="SOURCE", help="A spacy-transformers config.cfg or saved pipeline directory."
    ),
    output: Path = typer.Argument(
        ..., metavar="OUTPUT", help="The config file or (new) pipeline directory to write."
    ),
    exact_alignment: bool = typer.Option(
        False,
        "--exact-alignment",
        help="Align pieces exactly instead of as spacy-transformers did; reports what changes.",
    ),
    texts: Path | None = typer.Option(
        None, "--texts", metavar="FILE", help="Texts (one per line) to measure the change on."
    ),
) -> None:
    """Write the spacy-trf equivalent of a spacy-transformers config or saved pipeline (the
    encoder as a plain Hugging Face directory, downstream components with their weights); no
    spacy-transformers needed. Every setting that cannot carry over is reported."""
    _quiet_hub()
    from ..interop import MigrationError, migrate

    try:
        sample = None
        if texts is not None:
            sample = [line for line in texts.read_text(encoding="utf8").splitlines() if line]
        report = migrate(source, output, exact_alignment, sample)
    except (MigrationError, ValueError, OSError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from err
    for line in report.lines():
        typer.echo(line)


@app.command("annotate", cls=PlainHelp, short_help="Annotate a corpus on Ray, resumably.")
def annotate_cli(
    pipeline: str = typer.Argument(..., metavar="PIPELINE", help="Saved pipeline directory."),
    input: str = typer.Argument(
        ..., metavar="INPUT", help="A .jsonl or .parquet file, or a folder of .txt files."
    ),
    output: Path = typer.Argument(..., metavar="OUTPUT", help="Directory for the shards."),
    workers: int = typer.Option(1, "--workers", "-w", metavar="N", help="Ray actors."),
    threads: int = typer.Option(
        1, "--threads-per-worker", metavar="N", help="torch threads (Ray CPUs) per actor."
    ),
    batch_size: int = typer.Option(
        64, "--batch-size", "-b", metavar="N", help="Documents per nlp.pipe batch."
    ),
    gpus: float = typer.Option(0, "--gpus-per-worker", metavar="N", help="GPUs per actor."),
    address: str | None = typer.Option(
        None, "--address", metavar="ADDRESS", help="An existing Ray cluster; default: a local one."
    ),
    fmt: str = typer.Option(
        "docbin", "--format", "-f", metavar="FORMAT", help="docbin, jsonl or parquet."
    ),
    keep_trf: bool = typer.Option(False, "--keep-trf", help="Keep doc._.trf in DocBin shards."),
    resume: bool = typer.Option(False, "--resume", help="Skip the shards a stopped run wrote."),
    shard_mb: float = typer.Option(8.0, "--shard-mb", metavar="MB", help="Input MB per shard."),
    code: Path | None = typer.Option(
        None, "--code", metavar="FILE", help="Python file with custom registered functions."
    ),
) -> None:
    """Annotate a corpus with a saved pipeline on Ray Data: one output file per input shard,
    manifest.json, errors.jsonl; rerun with --resume to finish a stopped run."""
    result = _on_ray(
        lambda distributed: distributed.annotate(
            pipeline,
            input,
            output,
            workers=workers,
            threads_per_worker=threads,
            batch_size=batch_size,
            gpus_per_worker=gpus,
            address=address,
            fmt=fmt,
            keep_trf=keep_trf,
            resume=resume,
            shard_mb=shard_mb,
            code=code,
        )
    )
    typer.echo(
        f"{result.docs} documents in {result.shards} shards ({result.skipped} done before), "
        f"{result.errors} errors (errors.jsonl) -> {result.output}"
    )


@app.command(
    "train-ray",
    cls=PlainHelp,
    short_help="spacy train, data-parallel on Ray Train.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train_ray_cli(
    ctx: typer.Context,
    config: Path = typer.Argument(..., metavar="CONFIG", help="Training config (.cfg)."),
    output: Path = typer.Option(
        ..., "--output", "-o", metavar="DIR", help="Directory for model-best and model-last."
    ),
    workers: int = typer.Option(2, "--workers", "-w", metavar="N", help="Ray Train workers."),
    threads: int = typer.Option(
        1, "--threads-per-worker", metavar="N", help="torch threads (Ray CPUs) per worker."
    ),
    gpus: float = typer.Option(0, "--gpus-per-worker", metavar="N", help="GPUs per worker."),
    address: str | None = typer.Option(
        None, "--address", metavar="ADDRESS", help="An existing Ray cluster; default: a local one."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    storage: str | None = typer.Option(
        None, "--storage", metavar="PATH", help="Checkpoint storage shared by all nodes."
    ),
    max_failures: int = typer.Option(
        0, "--max-failures", metavar="N", help="Restarts from the last checkpoint on failure."
    ),
    code: Path | None = typer.Option(
        None, "--code", metavar="FILE", help="Python file with custom registered functions."
    ),
) -> None:
    """Train like `spacy train` on N data-parallel workers; config overrides as in spacy train
    (--paths.train ./train.spacy ...). Rerun with --resume to continue a stopped run."""
    from spacy.cli._util import parse_config_overrides

    result = _on_ray(
        lambda distributed: distributed.train(
            config,
            output,
            workers=workers,
            threads_per_worker=threads,
            gpus_per_worker=gpus,
            overrides=parse_config_overrides(ctx.args),
            address=address,
            resume=resume,
            storage=storage,
            code=code,
            max_failures=max_failures,
        )
    )
    typer.echo(
        f"{result.steps} steps, {result.words} words, best score {result.best_score} -> "
        f"{result.output / 'model-best'}"
    )


@app.command("demo", cls=PlainHelp, short_help="Show a text's pieces, alignment and similarities.")
def demo_cli(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", **MODEL_OPTION),
    text: str | None = typer.Option(None, "--text", metavar="TEXT", help="Text to encode."),
) -> None:
    """Encode a text; print the piece alignment and a few similarities."""
    _quiet_hub()
    from .demo import SAMPLE, demo

    demo(model, text or SAMPLE)


def main() -> None:
    app()
