"""The texts the benchmarks time, and the seeds that keep their sets apart: one definition for the suites,
the shared fixtures (conftest.py) and bench/profile_cpu.py."""

from __future__ import annotations

import random
from pathlib import Path

LOCALES = ["en_US", "de_DE", "fr_FR", "es_ES", "ru_RU", "zh_CN", "ja_JP", "it_IT", "pl_PL", "pt_BR"]
LIMIT_MAX_LENGTH = 256  # the CPU-limit workload (issue 12)
LIMIT_SEED = 2012  # held out: no suite or calibration uses it
CALIBRATION_SEED = 2013  # the int8 row's calibration texts, disjoint from the timed ones
CALIBRATION_TEXTS = 320  # 64 with --quick (mbexport.calibrate's minimum)


def mixed_texts(n: int, vocab_file: Path, seed: int = 0) -> list[str]:
    """``n`` texts: 40% one sentence, 35% a few, 18% a paragraph, 7% long (past 128 tokens).

    Faker's multilingual paragraphs when faker is installed, else words drawn from the vocab.
    """
    rng = random.Random(seed)
    sizes = [1 if r < 0.40 else 3 if r < 0.75 else 8 if r < 0.93 else 20 for r in (rng.random() for _ in range(n))]
    try:
        from faker import Faker
    except ImportError:
        words = [w for w in vocab_file.read_text(encoding="utf-8").split() if w.isalpha() and len(w) > 2]
        return [" ".join(rng.choices(words, k=12 * s)) + "." for s in sizes]
    fake = Faker(LOCALES)
    fake.seed_instance(seed)
    return [fake.paragraph(nb_sentences=s) for s in sizes]
