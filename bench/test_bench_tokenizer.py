"""Tokenizer throughput: ~50k mixed texts -> padded numpy (max_length 128, truncation), ours vs HF.

Competitors: HF's BertTokenizer (Rust `tokenizers`, fast) on the same vocab, same arguments, same
run; and the legacy pure-Python reference (transformers' BertTokenizerLegacy, Google's
tokenization.py) on the first 5,000 texts, since it is ~100x slower (compare its MB/s).
Ratios, MB/s and tokens/s go to ``benchmark.extra_info``; ``--quick`` shrinks the corpus.
"""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
transformers = pytest.importorskip("transformers")
faker = pytest.importorskip("faker")

from mbexport import WordPieceTokenizer  # noqa: E402

ARGS = {"padding": True, "truncation": True, "max_length": 128, "return_tensors": "np"}
_RESULTS: dict[str, float] = {}  # seconds per engine
_RATES: dict[str, float] = {}  # MB/s per engine


@pytest.fixture(scope="module")
def texts(quick: bool) -> list[str]:
    """Mixed texts: Faker prose in 12 locales, names/addresses, short queries, long paragraphs."""
    n = 5_000 if quick else 50_000
    rng = random.Random(0)
    pool = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for loc in ["en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "ru_RU", "zh_CN", "ja_JP", "el_GR", "tr_TR",
                    "ar_AA", "pt_BR"]:
            fake = faker.Faker(loc)
            fake.seed_instance(0)
            pool += [fake.sentence() for _ in range(300)] + [fake.name() + ", " + fake.address() for _ in range(100)]
            pool += [fake.text(max_nb_chars=600) for _ in range(60)]
    return [rng.choice(pool) for _ in range(n)]


@pytest.fixture(scope="module")
def ours(minilm_dir) -> WordPieceTokenizer:
    return WordPieceTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def hf(minilm_dir):
    return transformers.BertTokenizer.from_pretrained(str(minilm_dir))


def _info(benchmark, name: str, texts: list[str], out) -> None:
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    tokens = int(np.asarray(out["attention_mask"]).sum())
    sec = benchmark.stats.stats.min
    _RESULTS[name] = sec
    _RATES[name] = mb / sec
    benchmark.extra_info.update({"texts": len(texts), "MB": round(mb, 2), "MB_per_s": round(mb / sec, 1),
                                 "tokens_per_s": round(tokens / sec), "cores": os.cpu_count()})
    if "hf" in _RESULTS and name.startswith("ours"):
        benchmark.extra_info["speedup_vs_hf"] = round(_RESULTS["hf"] / sec, 1)


def test_hf_fast(benchmark, texts, hf, quick) -> None:
    benchmark.group = "tokenize 50k mixed texts -> padded np (max_length 128)"
    out = benchmark.pedantic(hf, args=(texts,), kwargs=ARGS, rounds=2 if quick else 3, iterations=1)
    _info(benchmark, "hf", texts, out)


def test_mbexport_all_threads(benchmark, texts, ours, hf, quick) -> None:
    benchmark.group = "tokenize 50k mixed texts -> padded np (max_length 128)"
    out = benchmark.pedantic(ours, args=(texts,), kwargs=ARGS, rounds=3 if quick else 5, iterations=1)
    sample = texts[:2000]
    assert np.array_equal(ours(sample, **ARGS)["input_ids"], hf(sample, **ARGS)["input_ids"])
    _info(benchmark, "ours", texts, out)


def test_mbexport_one_thread(benchmark, texts, ours, quick) -> None:
    benchmark.group = "tokenize 50k mixed texts -> padded np (max_length 128)"
    out = benchmark.pedantic(ours, args=(texts,), kwargs={**ARGS, "threads": 1}, rounds=3 if quick else 5,
                             iterations=1)
    _info(benchmark, "ours_1thread", texts, out)


def test_hf_fast_one_thread(benchmark, texts, hf, quick) -> None:
    """HF single-threaded: tokenizers reads TOKENIZERS_PARALLELISM on every call; compared with ours, threads=1."""
    benchmark.group = "single thread"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        out = benchmark.pedantic(hf, args=(texts,), kwargs=ARGS, rounds=2 if quick else 3, iterations=1)
    finally:
        del os.environ["TOKENIZERS_PARALLELISM"]
    _info(benchmark, "hf_1thread", texts, out)
    if "ours_1thread" in _RESULTS:
        benchmark.extra_info["ours_1thread_speedup"] = round(_RESULTS["hf_1thread"] / _RESULTS["ours_1thread"], 1)


def test_legacy_python_reference(benchmark, texts, minilm_dir, quick) -> None:
    """The reference our ids must equal; MB/s on a 5,000-text prefix (500 with --quick)."""
    legacy_mod = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")
    legacy = legacy_mod.BertTokenizerLegacy(str(minilm_dir / "vocab.txt"), do_lower_case=True)
    subset = texts[: 500 if quick else 5_000]
    benchmark.group = "tokenize 50k mixed texts -> padded np (max_length 128)"
    out = benchmark.pedantic(legacy, args=(subset,), kwargs=ARGS, rounds=1, iterations=1)
    _info(benchmark, "legacy", subset, out)
    if "ours" in _RATES:
        benchmark.extra_info["ours_MB_per_s_ratio"] = round(_RATES["ours"] / _RATES["legacy"], 1)
