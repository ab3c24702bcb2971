"""Does an mbexport export load in sentence-transformers' ONNX backend and optimum, meaning the same?

Not collected by pytest: optimum-onnx pins transformers < 4.58, which the torch extra's
transformers 5 rules out, so this runs in its own environment (docs/EXPORT.md, "Loading an
export in sentence-transformers and optimum")::

    python tests/compat/st_onnx_backend.py embed EXPORT_DIR SOURCE_DIR [--texts N]
    python tests/compat/st_onnx_backend.py classify EXPORT_DIR SOURCE_DIR

``embed``: ``SentenceTransformer(EXPORT_DIR, backend="onnx")`` against
``SentenceTransformer(SOURCE_DIR)`` (PyTorch) on multilingual Faker text, texts over
max_seq_length included; prints the minimum cosine and exits 1 below 0.9999.
``classify``: optimum's ``ORTModelForSequenceClassification`` pipeline over the export against
the transformers pipeline over the source; exits 1 unless every label is equal and a real name.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

MIN_COSINE = 0.9999


def texts(n: int) -> list[str]:
    """Faker text in every locale, every other one long (several paragraphs: over 256 tokens).

    Capital sigma is written lower-case: HF's fast tokenizer lowercases a word-final Σ to σ
    where mbexport (like BertTokenizer) writes ς (docs/TOKENIZER.md)."""
    import faker

    out: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, locale in enumerate(sorted(faker.config.AVAILABLE_LOCALES)):
            fake = faker.Faker(locale)
            fake.seed_instance(i)
            try:
                text = " ".join(fake.paragraph(nb_sentences=12) for _ in range(3)) if i % 2 else fake.sentence()
            except (AttributeError, ValueError):
                text = fake.word()
            out.append(" ".join(text.split()).replace("Σ", "σ"))
    return out[:n]


def embed(export_dir: str, source_dir: str, n: int) -> bool:
    from sentence_transformers import SentenceTransformer

    corpus = texts(n)
    onnx_model = SentenceTransformer(export_dir, backend="onnx", device="cpu")
    reference = SentenceTransformer(source_dir, device="cpu")
    a, b = onnx_model.encode(corpus), reference.encode(corpus)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    long = sum(len(reference.tokenizer(t)["input_ids"]) > reference.max_seq_length for t in corpus)
    print(f"backend=onnx {export_dir}: max_seq_length {onnx_model.max_seq_length}, {onnx_model}")
    print(f"{len(corpus)} texts ({long} over {reference.max_seq_length} tokens): min cosine {cos.min():.8f}, "
          f"below {MIN_COSINE}: {(cos < MIN_COSINE).sum()}")
    return bool(cos.min() >= MIN_COSINE)


def classify(export_dir: str, source_dir: str) -> bool:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    corpus = [f"{t} {'the ' * i}" for i, t in enumerate(  # tests/test_semantics.py's CLASSIFY_TEXTS
        ["hello world", "the model is fast", "a token of text", "bert export on nx", "seed step"] * 4)]
    ort = ORTModelForSequenceClassification.from_pretrained(export_dir)
    onnx_pipe = pipeline("text-classification", model=ort, tokenizer=AutoTokenizer.from_pretrained(export_dir))
    torch_pipe = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(source_dir),
                          tokenizer=AutoTokenizer.from_pretrained(source_dir))
    got = [r["label"] for r in onnx_pipe(corpus)]
    want = [r["label"] for r in torch_pipe(corpus)]
    names = set(ort.config.id2label.values())
    print(f"optimum pipeline labels {got}; transformers pipeline on the source {want}; id2label {ort.config.id2label}")
    return got == want and not any(label.startswith("LABEL_") for label in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("embed", "classify"))
    parser.add_argument("export_dir")
    parser.add_argument("source_dir")
    parser.add_argument("--texts", type=int, default=1000)
    args = parser.parse_args()
    ok = embed(args.export_dir, args.source_dir, args.texts) if args.check == "embed" else \
        classify(args.export_dir, args.source_dir)
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
