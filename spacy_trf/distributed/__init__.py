"""Scale-out on Ray: corpus annotation with Ray Data (``annotate``) and data-parallel training
with Ray Train (``train``). Needs the ``ray`` extra: ``pip install 'spacy-trf[ray]'``."""

from .annotate import AnnotateResult, annotate
from .train import TrainResult, train

__all__ = ["AnnotateResult", "TrainResult", "annotate", "train"]
