"""``python -m spacy_trf``: the same commands as ``spacy-trf``."""

from .cli import main

if __name__ == "__main__":
    main()
