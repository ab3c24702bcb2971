"""End-to-end CPU embedding: raw text -> mean-pooled MiniLM vectors, mbexport vs PyTorch.

Workload: 2,000 mixed-length multilingual texts (100 with ``--quick``), max_length 128,
2 threads. The baseline is what sentence-transformers does: texts sorted by length,
batches of 32, the HF fast tokenizer, transformers' BertModel in inference mode with
``torch.set_num_threads(2)``, mean pooling. Ours is ``Embedder(...).embed`` (native
tokenizer + batcher + onnxruntime) on the fused fp32 export, and on its int8 copy.
``extra_info["speedup"]`` = baseline mean / ours mean; int8 also records its cosine vs fp32.

Memory: ``test_embed_iter_rss`` streams short texts through ``embed_iter`` (1M, or 20k
with ``--quick``) and records peak RSS growth after the first chunks (flat = bounded).
"""

from __future__ import annotations

import random
import resource
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MAX_LENGTH = 128
THREADS = 2
RESULTS: dict[str, float] = {}
RESULTS_VECTORS: dict[str, np.ndarray] = {}  # vectors of each engine, for cosine figures
LOCALES = ["en_US", "de_DE", "fr_FR", "es_ES", "ru_RU", "zh_CN", "ja_JP", "it_IT", "pl_PL", "pt_BR"]


def mixed_texts(n: int, vocab_file: Path, seed: int = 0) -> list[str]:
    """``n`` texts: 40% one sentence, 35% a few, 18% a paragraph, 7% long (truncated at 128 tokens).

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


@pytest.fixture(scope="module")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("emb") / "minilm", head="base", parity=False))


@pytest.fixture(scope="module")
def texts(minilm_dir: Path, quick: bool) -> list[str]:
    return mixed_texts(100 if quick else 2000, minilm_dir / "vocab.txt")


def torch_embed(model, tokenizer, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """sentence-transformers' encode loop: length-sorted batches, mean pooling, order restored."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_LENGTH,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[idx] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()
    return out


def test_embed_baseline_pytorch(benchmark, minilm_dir, texts, quick):
    benchmark.group = "embed-cpu"
    torch.set_num_threads(THREADS)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    model = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    torch_embed(model, tokenizer, texts[:64])  # warm-up
    vectors = benchmark.pedantic(lambda: torch_embed(model, tokenizer, texts), rounds=1 if quick else 3, iterations=1)
    RESULTS["baseline"] = benchmark.stats.stats.mean
    RESULTS_VECTORS["torch"] = vectors
    benchmark.extra_info.update({"engine": "transformers BertModel, batches of 32 sorted by length",
                                 "texts": len(texts), "max_length": MAX_LENGTH, "threads": THREADS,
                                 "torch": torch.__version__})


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_embed_mbexport(benchmark, minilm_export, texts, quick, tmp_path_factory, precision):
    from mbexport import Embedder
    from mbexport.runtime.quantize import quantize_export

    benchmark.group = "embed-cpu"
    export = minilm_export if precision == "fp32" else quantize_export(minilm_export, tmp_path_factory.mktemp("q") / "int8")
    embedder = Embedder(export, pooling="mean", max_length=MAX_LENGTH, threads=THREADS)
    embedder.embed(texts[:64])  # warm-up
    vectors = benchmark.pedantic(lambda: embedder.embed(texts), rounds=1 if quick else 3, iterations=1)
    RESULTS_VECTORS[precision] = vectors
    runs = (1 if quick else 3) + 1
    info = {"engine": f"mbexport Embedder ({precision}, batch_tokens {embedder.batch_tokens})", "texts": len(texts),
            "max_length": MAX_LENGTH, "threads": THREADS, "truncated": embedder.stats.truncated // runs,
            "tokens": embedder.stats.tokens // runs, "padding_fraction":
            round(1 - embedder.stats.tokens / max(embedder.stats.padded_tokens, 1), 4)}
    reference = RESULTS_VECTORS.get("torch" if precision == "fp32" else "fp32")
    if reference is not None:
        cos = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        info["min_cosine_vs_" + ("torch" if precision == "fp32" else "fp32")] = round(float(cos.min()), 6)
        info["mean_cosine"] = round(float(cos.mean()), 6)
    if "baseline" in RESULTS:
        info["speedup"] = round(RESULTS["baseline"] / benchmark.stats.stats.mean, 2)
    benchmark.extra_info.update(info)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_embed_iter_rss(benchmark, minilm_export, quick):
    """1M short texts through embed_iter, generated lazily: RSS after warm-up must stay flat."""
    from mbexport import Embedder

    benchmark.group = "embed-memory"
    total = 20_000 if quick else 1_000_000
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    embedder = Embedder(minilm_export, pooling="mean", max_length=32, threads=THREADS)

    def source():
        for i in range(total):
            yield f"{words[i % 10]} {words[(i // 10) % 10]} number {i}"

    samples: list[tuple[int, float]] = []

    def run() -> int:
        rows = checksum = 0
        for k, chunk in enumerate(embedder.embed_iter(source())):
            rows += len(chunk)
            checksum += int(chunk[:, 0].sum() != 0)
            if k % 10 == 0:
                samples.append((rows, _rss_mib()))
        return rows

    rows = benchmark.pedantic(run, rounds=1, iterations=1)
    assert rows == total
    warm = [rss for n, rss in samples if n >= min(total // 4, 50_000)]
    base = warm[0]
    growth = max(warm) - base
    benchmark.extra_info.update({"texts": total, "rss_after_warmup_mib": round(base, 1),
                                 "rss_peak_mib": round(max(rss for _, rss in samples), 1),
                                 "rss_growth_after_warmup_mib": round(growth, 1),
                                 "texts_per_s": round(total / benchmark.stats.stats.mean)})
    assert growth < 64, f"RSS grew by {growth:.0f} MiB while streaming: memory is not bounded"
