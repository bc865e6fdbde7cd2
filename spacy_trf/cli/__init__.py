"""The ``spacy-trf`` command line (also ``python -m spacy_trf``)."""

import os
from pathlib import Path

import typer

from .init_config import COMPONENTS, DEFAULT_MODEL, OPTIMIZE, make_config, write_config

app = typer.Typer(
    name="spacy-trf",
    help="Hugging Face transformer encoders in spaCy pipelines.",
    no_args_is_help=True,
    add_completion=False,
)


def _quiet_hub() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _split(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


@app.command("init-config")
def init_config_cli(
    output: Path = typer.Argument(..., help="Where to write the config (.cfg)."),
    lang: str = typer.Option("en", "--lang", "-l", help="spaCy language code."),
    pipeline: str = typer.Option(
        "tagger,parser,ner", "--pipeline", "-p", help=f"Comma-separated: {', '.join(COMPONENTS)}."
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="HF hub id or local dir."),
    optimize: str = typer.Option(
        "efficiency", "--optimize", "-o", help=f"One of: {', '.join(OPTIMIZE)}."
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
    except ValueError as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from err
    write_config(config, output)
    typer.echo(
        f"Saved config to {output}. Train with:\n"
        f"python -m spacy train {output} --paths.train TRAIN.spacy --paths.dev DEV.spacy"
    )


@app.command("quickstart")
def quickstart_cli(
    output: Path = typer.Option(Path("quickstart_output"), "--output", "-o"),
    train: Path | None = typer.Option(None, "--train", help="Training data (see README)."),
    dev: Path | None = typer.Option(None, "--dev", help="Development data."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
    pipeline: str = typer.Option("", "--pipeline", "-p", help="Default: from the annotations."),
    max_steps: int = typer.Option(250, "--max-steps"),
    eval_frequency: int = typer.Option(50, "--eval-frequency"),
    frozen: bool = typer.Option(False, "--frozen"),
    text: str | None = typer.Option(None, "--text", help="Text to annotate at the end."),
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
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from err


@app.command("export-onnx")
def export_onnx_cli(
    pipeline: str = typer.Argument(..., help="Saved pipeline directory or package name."),
    output: Path = typer.Argument(..., help="New directory for the ONNX pipeline."),
    component: str = typer.Option("", "--component", "-c", help="Default: every trf component."),
    text: str = typer.Option("", "--text", help="Text to compare PyTorch and ONNX outputs on."),
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


@app.command("demo")
def demo_cli(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
    text: str | None = typer.Option(None, "--text"),
) -> None:
    """Encode a text; print the piece alignment and a few similarities."""
    _quiet_hub()
    from .demo import SAMPLE, demo

    demo(model, text or SAMPLE)


def main() -> None:
    app()
