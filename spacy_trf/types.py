"""Stage contracts: the Thinc model types that connect the stages.

Doc -> (encoder) ``DocTransformerOutput`` -> (layer mix) ``LayerRows`` -> (pooling) one row per
token or per doc -> heads.
"""

from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d, Ragged

from .stitch import DocTransformerOutput, LayerRows

# An encoder (TransformerModel.v1) or a raw-output listener: one output per doc.
DocsToOutputsModelT = Model[list[Doc], list[DocTransformerOutput]]
# Layer selection or scalar mix: one layer of rows per doc.
OutputsToRowsModelT = Model[list[DocTransformerOutput], list[LayerRows]]
# Token pooling: one row per spaCy token (per word, for the Thinc layers).
RowsToTokensModelT = Model[list[LayerRows], list[Floats2d]]
# Doc pooling: one row per doc.
RowsToDocsModelT = Model[list[LayerRows], Floats2d]
# A tok2vec for spaCy's components: one row per token.
DocsToTokensModelT = Model[list[Doc], list[Floats2d]]
# Reduces each token's piece rows to one row, e.g. thinc's reduce_mean.v1.
PoolingModelT = Model[Ragged, Floats2d]
