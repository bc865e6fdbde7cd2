"""The Thinc tagger example (examples/thinc_tagger) on 300 EWT sentences: loss falls, the saved
model reloads and predicts the same tags."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import data_dir

EWT = data_dir() / "ud-en-ewt"
SCRIPT = Path(__file__).parent.parent / "examples" / "thinc_tagger" / "train.py"


@pytest.mark.skipif(not EWT.exists(), reason="needs ../shared/data/ud-en-ewt")
def test_thinc_tagger_example_learns_and_reloads(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--data", str(EWT), "--output", str(tmp_path)]
    cmd += ["--train-limit", "300", "--dev-limit", "100", "--n-epoch", "1", "--max-steps", "8"]
    # Few steps: no warm-up and a higher rate, so that the loss visibly falls.
    cmd += ["--set", "optimizer.learn_rate.warmup_steps", "1"]
    cmd += ["--set", "optimizer.learn_rate.initial_rate", "1e-3"]
    # Small sub-batches, so that logical batches really are split and gradients accumulated.
    cmd += ["--set", "training.batch_size", "16", "--set", "training.words_per_subbatch", "64"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads((tmp_path / "results.json").read_text())
    (epoch,) = result["epochs"]
    assert epoch["steps"] == 8
    assert epoch["last_loss"] < 0.9 * epoch["first_loss"]
    assert epoch["dev_upos"] > 50.0  # most frequent tag alone gives ~17%
    assert result["reload_predicts_same"] is True
    assert (tmp_path / "model").is_file()
