"""nlp.pipe(n_process=2) after the parent has run the pipeline: forked children used to wait
forever in torch's first parallel op (spacy_trf/encoder/fork.py)."""

import subprocess
import sys
import textwrap

from .fixtures_models import minilm_path

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("trf", config={"model": {"name": %r}})
    nlp.initialize()
    texts = [f"Sentence {i} is about the weather in town {i %% 7}." for i in range(40)]
    serial = list(nlp.pipe(texts))  # the parent runs torch's thread pool first
    forked = list(nlp.pipe(texts, n_process=2, batch_size=8))
    assert [d.text for d in forked] == texts
    for a, b in zip(serial, forked, strict=True):
        np.testing.assert_allclose(b._.trf.last_hidden_state, a._.trf.last_hidden_state, atol=1e-5)
    print("ok")
    """
)


def test_n_process_works_after_the_parent_ran_the_pipeline() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT % minilm_path()],
        capture_output=True,
        text=True,
        timeout=240,  # the hang this guards against never ends
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
