"""Scale-out on Ray: corpus annotation with Ray Data (``annotate``). Needs the ``ray`` extra:
``pip install 'spacy-trf[ray]'``."""

from .annotate import AnnotateResult, annotate

__all__ = ["AnnotateResult", "annotate"]
