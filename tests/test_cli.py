"""The spacy-trf CLI: init-config writes complete configs that spaCy trains, evaluates and fills
without changes; the quickstart trains, saves and annotates."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.cli.evaluate import evaluate
from spacy.cli.train import train
from spacy.tokens import Doc, DocBin, Span
from thinc.api import Config
from typer.testing import CliRunner

from spacy_trf.cli import app
from spacy_trf.cli.data import infer_pipeline, read_docs
from spacy_trf.cli.init_config import COMPONENTS, make_config
from spacy_trf.encoder import get_shim

ALL = list(COMPONENTS)
# words, tags, pos, heads (absolute), deps, entities (IOB), spans (start, end, label), category
SENTENCES = [
    (
        "Anna visited Paris in May .".split(),
        ["NNP", "VBD", "NNP", "IN", "NNP", "."],
        ["PROPN", "VERB", "PROPN", "ADP", "PROPN", "PUNCT"],
        [1, 1, 1, 4, 1, 1],
        ["nsubj", "ROOT", "dobj", "case", "obl", "punct"],
        ["B-PERSON", "O", "B-GPE", "O", "B-DATE", "O"],
        [(0, 1, "WHO"), (2, 3, "WHERE")],
        "TRAVEL",
    ),
    (
        "The team won the cup .".split(),
        ["DT", "NN", "VBD", "DT", "NN", "."],
        ["DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT"],
        [1, 2, 2, 4, 2, 2],
        ["det", "nsubj", "ROOT", "det", "dobj", "punct"],
        ["O", "O", "O", "O", "O", "O"],
        [(0, 2, "WHO")],
        "SPORTS",
    ),
    (
        "Acme sold shares in Berlin .".split(),
        ["NNP", "VBD", "NNS", "IN", "NNP", "."],
        ["PROPN", "VERB", "NOUN", "ADP", "PROPN", "PUNCT"],
        [1, 1, 1, 4, 1, 1],
        ["nsubj", "ROOT", "dobj", "case", "obl", "punct"],
        ["B-ORG", "O", "O", "O", "B-GPE", "O"],
        [(0, 1, "WHO"), (4, 5, "WHERE")],
        "BUSINESS",
    ),
    (
        "Players ran fast today .".split(),
        ["NNS", "VBD", "RB", "NN", "."],
        ["NOUN", "VERB", "ADV", "NOUN", "PUNCT"],
        [1, 1, 1, 1, 1],
        ["nsubj", "ROOT", "advmod", "npadvmod", "punct"],
        ["O", "O", "O", "B-DATE", "O"],
        [(0, 1, "WHO")],
        "SPORTS",
    ),
]
LABELS = ["TRAVEL", "SPORTS", "BUSINESS"]


def annotated_docs(vocab: spacy.Vocab) -> list[Doc]:
    docs = []
    for words, tags, pos, heads, deps, ents, spans, cat in SENTENCES:
        morphs = ["Number=Plur" if t in ("NNS",) else "Number=Sing" for t in tags]
        doc = Doc(
            vocab, words=words, tags=tags, pos=pos, morphs=morphs, heads=heads, deps=deps, ents=ents
        )
        doc.spans["sc"] = [Span(doc, s, e, label=label) for s, e, label in spans]
        doc.cats = {label: float(label == cat) for label in LABELS}
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    docs = annotated_docs(spacy.blank("en").vocab)
    DocBin(docs=docs * 3).to_disk(root / "train.spacy")
    DocBin(docs=docs).to_disk(root / "dev.spacy")
    return root


def test_init_config_cli_writes_a_complete_config(tmp_path: Path, model_dirs: dict) -> None:
    out = tmp_path / "all.cfg"
    result = CliRunner().invoke(
        app,
        [
            "init-config",
            str(out),
            "--lang",
            "en",
            "--pipeline",
            ",".join(ALL),
            "--model",
            model_dirs["roberta"],
            "--optimize",
            "accuracy",
            "--frozen",
        ],
    )
    assert result.exit_code == 0, result.output
    config = Config().from_disk(out)
    assert config["nlp"]["pipeline"] == ["trf", *ALL]
    assert config["components"]["trf"]["frozen"] is True
    assert "???" not in out.read_text()
    for name in ALL:
        t2v = config["components"][name]["model"]["tok2vec"]["@architectures"]
        assert t2v.startswith("spacy-trf."), name
    optimizer = config["training"]["optimizer"]
    assert optimizer["@optimizers"] == "Adam.v1"
    assert optimizer["learn_rate"]["@schedules"] == "warmup_linear.v1"
    assert config["training"]["batcher"]["@batchers"] == "spacy.batch_by_padded.v1"
    # `spacy init fill-config` has nothing to add.
    filled = tmp_path / "filled.cfg"
    subprocess.run(
        [sys.executable, "-m", "spacy", "init", "fill-config", str(out), str(filled)],
        check=True,
        capture_output=True,
    )
    assert filled.read_text() == out.read_text()


def test_init_config_rejects_bad_values(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["init-config", str(tmp_path / "x.cfg"), "--pipeline", "tagger,lemma"])
    assert bad.exit_code == 1 and "lemma" in bad.output
    assert not (tmp_path / "x.cfg").exists()
    bad = runner.invoke(app, ["init-config", str(tmp_path / "y.cfg"), "--optimize", "speed"])
    assert bad.exit_code == 1 and "optimize" in bad.output


def test_every_component_trains_with_spacy_train_and_evaluates(
    tmp_path: Path, corpus: Path, model_dirs: dict
) -> None:
    config = make_config(ALL, model=model_dirs["roberta"], max_steps=6)
    config_path = tmp_path / "config.cfg"
    config_path.write_text(config.to_str())
    overrides = {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "training.eval_frequency": 3,
        "training.accumulate_gradient": 1,
        "training.batcher.size": 50,
        "training.logger.progress_bar": False,
        "components.parser.min_action_freq": 1,
    }
    train(config_path, tmp_path / "out", overrides=overrides)
    best = tmp_path / "out" / "model-best"
    nlp = spacy.load(best)
    assert nlp.pipe_names == ["trf", *ALL]
    doc = nlp("Anna visited Berlin in May .")
    assert len(doc.cats) == 3 and doc.has_annotation("TAG") and doc.has_annotation("DEP")
    scores = evaluate(str(best), corpus / "dev.spacy", output=tmp_path / "scores.json")
    for key in ("tag_acc", "pos_acc", "morph_acc", "dep_las", "ents_f", "spans_sc_f", "cats_score"):
        assert key in scores, key
    assert json.loads((tmp_path / "scores.json").read_text())["tag_acc"] == pytest.approx(
        scores["tag_acc"]
    )


def test_data_readers_and_pipeline_inference(tmp_path: Path) -> None:
    vocab = spacy.blank("en").vocab
    sample = Path(__file__).parent.parent / "spacy_trf" / "data" / "quickstart"
    docs = read_docs(sample / "train.jsonl", vocab)
    assert len(docs) >= 200 and infer_pipeline(docs) == ["tagger", "ner", "textcat"]
    (tmp_path / "t.iob").write_text("Anna|NNP|B-PER lives|VBZ|O in|IN|O Rome|NNP|B-LOC\n")
    iob = read_docs(tmp_path / "t.iob", vocab)
    assert [e.label_ for e in iob[0].ents] == ["PER", "LOC"]
    conll = "-DOCSTART- -X- O O\n\nAnna NNP B-NP B-PER\nsings VBZ B-VP O\n\n"
    (tmp_path / "t.txt").write_text(conll)
    assert [e.text for e in read_docs(tmp_path / "t.txt", vocab)[0].ents] == ["Anna"]
    (tmp_path / "t.jsonl").write_text(
        json.dumps({"text": "Anna sings.", "entities": [[0, 4, "PER"]], "cats": {"A": 1.0}})
    )
    doc = read_docs(tmp_path / "t.jsonl", vocab)[0]
    assert doc.ents[0].text == "Anna" and doc.cats == {"A": 1.0}
    with pytest.raises(ValueError, match="Unsupported data file"):
        (tmp_path / "t.csv").write_text("a,b")
        read_docs(tmp_path / "t.csv", vocab)
    with pytest.raises(FileNotFoundError, match="No data file"):
        read_docs(tmp_path / "missing.spacy", vocab)


@pytest.mark.parametrize(
    "name,content,where,words",
    [
        ("blank.conllu", "\n  \n", "blank.conllu", "is empty"),
        ("empty.jsonl", "", "empty.jsonl", "is empty"),
        ("spaces.conllu", "1 Anna _ PROPN\n", "spaces.conllu:1", "10 tab-separated columns"),
        ("short.conllu", "# text = A\n1\tA\t_\n", "short.conllu:2", "found 3"),
        (
            "tags.jsonl",
            '{"words": ["a"]}\n{"words": ["b", "c"], "tags": ["X"]}\n',
            "tags.jsonl:2",
            r"tags must be a list with one value per word \(2 words\)",
        ),
        ("ents.jsonl", '{"words": ["a"], "entities": ["Q"]}\n', "ents.jsonl:1", "Ill-formed IOB"),
        ("broken.jsonl", '{"words": ["a"]}\n{"words": \n', "broken.jsonl:2", "not a JSON line"),
    ],
)
def test_bad_data_files_name_the_file_and_line(
    tmp_path: Path, name: str, content: str, where: str, words: str
) -> None:
    """quickstart's readers stop at the first bad line with one error naming file:line and
    what is wrong, in the library and on the command line."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=words) as err:
        read_docs(path, spacy.blank("en").vocab)
    assert where in str(err.value)
    result = CliRunner().invoke(
        app, ["quickstart", "--train", str(path), "--dev", str(path), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and where in result.output and "Traceback" not in result.output


def test_quickstart_trains_saves_and_annotates(
    tmp_path: Path, model_dirs: dict, capsys: pytest.CaptureFixture
) -> None:
    from spacy_trf.cli.quickstart import quickstart

    scores = quickstart(
        tmp_path / "qs",
        model=model_dirs["roberta"],
        max_steps=4,
        eval_frequency=2,
        text="Anna ran.",
    )
    printed = capsys.readouterr().out
    assert "Dev scores" in printed and "Annotated sample" in printed and "Anna" in printed
    for key in ("tag_acc", "ents_f", "cats_score"):
        assert key in scores
    nlp = spacy.load(tmp_path / "qs" / "model-best")
    assert nlp.pipe_names == ["trf", "tagger", "ner", "textcat"]
    assert (tmp_path / "qs" / "config.cfg").exists()


def test_quickstart_needs_train_and_dev_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["quickstart", "-o", str(tmp_path), "--train", str(tmp_path / "t.spacy")]
    )
    assert result.exit_code == 1 and "--dev" in result.output


@pytest.mark.parametrize(
    "flag,expected",
    [
        ([], {"tagger": True, "ner": True}),
        (["--no-hybrid"], {"tagger": False, "ner": False}),
        (["--hybrid"], {"tagger": True, "ner": True}),
    ],
)
def test_init_config_hash_features_default_to_every_token_component(
    tmp_path: Path, flag: list[str], expected: dict[str, bool]
) -> None:
    out = tmp_path / "c.cfg"
    result = CliRunner().invoke(
        app, ["init-config", str(out), "--pipeline", "tagger,ner,textcat", *flag]
    )
    assert result.exit_code == 0, result.output
    config = Config().from_disk(out)
    for name, hybrid in expected.items():
        arch = config["components"][name]["model"]["tok2vec"]["@architectures"]
        assert (arch == "spacy-trf.HybridTok2Vec.v1") is hybrid, (name, flag)
    assert config["components"]["textcat"]["model"]["pooling"] == "mean"
    assert config["training"]["optimizer"]["learn_rate"]["initial_rate"] == 1e-3


@pytest.mark.parametrize("family,frozen", [("bert", False), ("xlmr", False), ("bert", True)])
def test_init_config_turns_attention_dropout_off_for_fine_tuning(
    model_dirs: dict[str, str], family: str, frozen: bool
) -> None:
    """Fine-tuning configs load the encoder without attention dropout (same key for every family
    that has one); the setting reaches the loaded model."""
    config = make_config(["tagger"], model=model_dirs[family], frozen=frozen)
    transformer_config = config["components"]["trf"]["model"]["transformer_config"]
    assert transformer_config == ({} if frozen else {"attention_probs_dropout_prob": 0.0})
    if not frozen:
        nlp = spacy.util.load_model_from_config(config, auto_fill=False)
        nlp.get_pipe("trf").model.initialize()
        hf = get_shim(nlp.get_pipe("trf").model).hf_model
        assert hf.config.attention_probs_dropout_prob == 0.0
        assert hf.config.hidden_dropout_prob > 0.0  # the rest of the model's dropout stays


def test_init_config_refuses_a_model_it_cannot_read(tmp_path: Path) -> None:
    """A missing directory or an unreachable hub id stops init-config with the fix, and no
    config is written (it could not load, and its dropout setting would be lost)."""
    runner = CliRunner()
    for model, words in (("/nope", "does not exist"), ("nobody/missing-model", "HF_HUB_OFFLINE")):
        out = tmp_path / "c.cfg"
        result = runner.invoke(app, ["init-config", str(out), "--model", model])
        assert result.exit_code == 1 and words in result.output, result.output
        assert not out.exists()


def test_help_has_no_placeholders_and_no_cut_descriptions() -> None:
    runner = CliRunner()
    main = runner.invoke(app, ["--help"])
    assert main.exit_code == 0 and "..." not in main.output.split("Commands:")[1]
    for command in ("init-config", "quickstart", "export-onnx", "annotate", "demo"):
        result = runner.invoke(app, [command, "--help"], terminal_width=80)
        assert result.exit_code == 0, result.output
        for placeholder in ("<bool>", "<path>", "<str>", "<int>", "{"):
            assert placeholder not in result.output, (command, placeholder)
    usage = runner.invoke(app, ["init-config", "--help"]).output
    assert "Usage: spacy-trf init-config [OPTIONS] OUTPUT" in usage
    assert "sentence-transformers/all-MiniLM-L6-v2" in usage.replace("-\n", "-").replace(" ", "")


def test_training_table_shows_pos_accuracy_only_with_a_morphologizer() -> None:
    """spaCy's tagger reports POS accuracy (0.00 unless something sets token.pos_)."""
    tagger_only = make_config(["tagger", "ner"])["training"]["score_weights"]
    assert tagger_only["pos_acc"] is None and tagger_only["tag_acc"] > 0
    assert make_config(["tagger", "morphologizer"])["training"]["score_weights"]["pos_acc"] > 0
