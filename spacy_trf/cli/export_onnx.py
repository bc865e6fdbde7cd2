"""``spacy-trf export-onnx``: a copy of a pipeline whose trf encoders run on ONNX Runtime."""

from pathlib import Path
from typing import cast

import numpy as np
import spacy
from wasabi import msg

from ..pipeline import Transformer

WARN_DIFF = 1e-3
CHECK_TEXT = "ONNX Runtime runs the exported encoder; PyTorch still trains it."


def export_onnx(
    pipeline: str | Path, output: Path, components: list[str] | None = None, check_text: str = ""
) -> dict[str, float]:
    """Load ``pipeline``, export its trf components to ONNX and save the pipeline to ``output``
    with ``inference = "onnx"``. Return, per component, the largest difference between the
    PyTorch and ONNX hidden states on ``check_text``.
    """
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"'{output}' exists and is not empty: choose a new output directory.")
    nlp = spacy.load(pipeline)
    names = [name for name, pipe in nlp.pipeline if isinstance(pipe, Transformer)]
    if not names:
        raise ValueError(f"'{pipeline}' has no trf component to export.")
    unknown = sorted(set(components or []) - set(names))
    if unknown:
        raise ValueError(f"No trf component named {unknown} in '{pipeline}'; it has {names}.")
    doc = nlp.make_doc(check_text or CHECK_TEXT)
    diffs = {}
    for name in components or names:
        trf = cast(Transformer, nlp.get_pipe(name))
        trf.set_inference("torch")
        expected = trf.model.predict([doc])[0].last_hidden_state
        trf.set_inference("onnx")
        nlp.get_pipe_config(name)["inference"] = "onnx"  # saved in config.cfg
        got = trf.model.predict([doc])[0].last_hidden_state  # exports
        diffs[name] = float(np.abs(np.asarray(got) - np.asarray(expected)).max(initial=0.0))
    nlp.to_disk(output)  # output is absent or empty (checked above)
    for name, diff in diffs.items():
        if diff > WARN_DIFF:
            msg.warn(
                f"{name}: exported, but the hidden states differ from PyTorch's by up to "
                f"{diff:.2e} (fp32 exports usually stay below {WARN_DIFF:.0e}): check its accuracy "
                "with `python -m spacy evaluate` before serving it."
            )
        else:
            msg.good(f"{name}: exported; largest difference from PyTorch {diff:.2e}")
    msg.good(f"Saved to {output}: spacy.load('{output}') runs the encoder on ONNX Runtime.")
    return diffs
