"""``spacy-trf demo``: encode sample text and show alignment and similarity."""

SAMPLE = (
    "Laced with dreams-dripping in reality, the American Dream reignites after 9.11 with a true "
    "story about the Devil Ray's mid-life rookie, Jimmy Morris."
)
PAIRS = [
    ("A cat sleeps on the sofa.", "A dog naps on the couch."),
    ("A cat sleeps on the sofa.", "Shares fell as bond yields rose."),
]


def demo(model: str, text: str) -> None:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe(
        "trf",
        config={
            "model": {"name": model},
            "set_extra_annotations": {"@annotation_setters": "spacy-trf.doc_tensor.v1"},
        },
    )
    nlp.initialize()
    doc = nlp(text)
    out = doc._.trf
    print(f"model: {model}")
    print(
        f"{len(doc)} tokens, {len(out.piece_ids)} pieces, {len(out.window_ranges)} window(s), "
        f"hidden width {out.width}\n"
    )
    texts = out.piece_texts
    for tok in doc:
        print(f"  {tok.text!r:>14} -> {' '.join(texts[i] for i in out.token_pieces(tok.i))}")
    print()
    for a, b in PAIRS:
        print(f"  similarity({a!r}, {b!r}) = {nlp(a).similarity(nlp(b)):.3f}")
