"""A word-level tagger from the Thinc layers: tokenizer -> encoder -> softmax."""

from thinc.api import Model, Softmax_v2, chain, reduce_mean, registry, with_array
from thinc.types import Floats2d

from .encoder import TransformerEncoder
from .tokenizer import TransformerTokenizer


@registry.layers("spacy-trf.TransformersTagger.v1")
def TransformersTagger(starter: str, n_tags: int) -> Model[list[list[str]], list[Floats2d]]:
    """One tag distribution per word (not per piece) for pre-split words.

    starter (str): Hub id or local directory of the encoder.
    n_tags (int): Number of tags.
    """
    if not isinstance(n_tags, int) or n_tags < 1:
        raise ValueError(f"n_tags must be a positive integer, got {n_tags!r}.")
    return chain(
        TransformerTokenizer(starter),
        TransformerEncoder(starter, reduce_mean()),
        with_array(Softmax_v2(nO=n_tags)),
    )
