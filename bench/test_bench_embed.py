"""End-to-end CPU embedding: raw text -> mean-pooled MiniLM vectors, mbexport vs PyTorch.

Workload: 2,000 mixed-length multilingual texts (100 with ``--quick``), max_length 128,
2 threads. The baseline is what sentence-transformers does: texts sorted by length,
batches of 32, the HF fast tokenizer, transformers' BertModel in inference mode with
``torch.set_num_threads(2)``, mean pooling. Ours is ``Embedder(...).embed`` (native
tokenizer + batcher + onnxruntime) on the fused fp32 export, and on its int8 copy.
``extra_info["speedup"]`` = baseline mean / ours mean; int8 also records its cosine vs fp32.

The CPU backend close to its limit (group ``embed-cpu-limit``, issue 12): 2,000 held-out texts (100
with ``--quick``), MiniLM, mean pooling + L2 normalisation, max_length 256, 2 threads, raw text ->
vectors. The peer, in the same run: optimum-cli's O2 export (peers venv) on onnxruntime, fed by HF
``tokenizers`` in batches of 32 sorted by token length. Ours: the Embedder on onnxruntime (fp32) and on
OpenVINO (fp32, bf16, calibrated int8). Every engine first embeds the texts once untimed (steady
state: OpenVINO prepares kernels per new batch shape; that pass's seconds are recorded as
``first_pass_seconds``). Each row records texts/s, the speed-up over the peer, cosines vs
the peer and vs our fp32, padding, and the workload's FLOPs against this machine's fp32 GEMM rate (measured
in the run). Goals, recorded not asserted: fp32 >= 1.25x the peer; reduced precision >= 2.5x at min
cosine >= 0.99. bench/profile_cpu.py shows where the time goes.

Memory: ``test_embed_iter_rss`` streams short texts through ``embed_iter`` (1M, or 20k
with ``--quick``) on a 1-layer model with MiniLM's vocab, and records RSS growth after
the first 10% (flat = bounded).

GPU (marked ``gpu``, skipped without CUDA; bench/gpu/run.sh runs them on the GPU machine): the
BERT-base-shaped fp16 export at B=1024 and B=1, S=128 (inputs bound on the device, the pooled output
read) and end to end on 50,000 texts, each against transformers SDPA fp16 on the same card; and the
same texts through its padded and its packed (``--flavor packed``) export, the packed speed-up.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peers import optimum_export, run_timed
from workloads import LIMIT_MAX_LENGTH, LIMIT_SEED, mixed_texts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MAX_LENGTH = 128
THREADS = 2
RESULTS: dict[str, float] = {}
RESULTS_VECTORS: dict[str, np.ndarray] = {}  # vectors of each engine, for cosine figures


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
    RESULTS["baseline_min"] = benchmark.stats.stats.min
    RESULTS_VECTORS["torch"] = vectors
    benchmark.extra_info.update({"engine": "transformers BertModel, batches of 32 sorted by length",
                                 "texts": len(texts), "max_length": MAX_LENGTH, "threads": THREADS,
                                 "torch": torch.__version__})


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_embed_mbexport(benchmark, minilm_dir, minilm_export, texts, quick, tmp_path_factory, precision):
    from mbexport import Embedder
    from mbexport.converter import convert
    from mbexport.runtime import EmbedStats

    benchmark.group = "embed-cpu"
    export = minilm_export if precision == "fp32" else convert(
        str(minilm_dir), out=tmp_path_factory.mktemp("q") / "int8", head="base", precision="int8", parity=False)
    embedder = Embedder(export, pooling="mean", normalize=False, max_length=MAX_LENGTH, threads=THREADS)
    embedder.embed(texts[:64])  # warm-up
    embedder.stats = EmbedStats()
    runs = 1 if quick else 3
    vectors = benchmark.pedantic(lambda: embedder.embed(texts), rounds=runs, iterations=1)
    RESULTS_VECTORS[precision] = vectors
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
        info["speedup_min"] = round(RESULTS["baseline_min"] / benchmark.stats.stats.min, 2)  # robust to load
    benchmark.extra_info.update(info)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def small_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, hidden-64 BERT with MiniLM's real vocab: the memory run measures the pipeline, not the GEMMs."""
    from mbexport.converter import convert

    torch.manual_seed(0)
    src = tmp_path_factory.mktemp("small-src")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=512)
    transformers.BertModel(config).eval().save_pretrained(src)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (src / name).write_bytes((minilm_dir / name).read_bytes())
    return Path(convert(str(src), out=tmp_path_factory.mktemp("small") / "export", head="base", parity=False))


def test_embed_iter_rss(benchmark, small_export, quick):
    """1M short texts (20k with --quick) through embed_iter, generated lazily: RSS must stay flat."""
    from mbexport import Embedder

    benchmark.group = "embed-memory"
    total = 20_000 if quick else 1_000_000
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    embedder = Embedder(small_export, pooling="mean", max_length=32, threads=THREADS)

    def source():
        for i in range(total):
            yield f"{words[i % 10]} {words[(i // 10) % 10]} number {i}"

    samples: list[tuple[int, float]] = []

    def run() -> int:
        rows = 0
        for chunk in embedder.embed_iter(source()):
            rows += len(chunk)
            samples.append((rows, _rss_mib()))
        return rows

    rows = benchmark.pedantic(run, rounds=1, iterations=1)
    assert rows == total
    warm = [rss for n, rss in samples if n >= total // 10]  # allocator and onnxruntime arenas settled
    growth = max(warm) - warm[0]
    benchmark.extra_info.update({"texts": total, "window": embedder.window,
                                 "rss_at_10pct_mib": round(warm[0], 1),
                                 "rss_peak_mib": round(max(rss for _, rss in samples), 1),
                                 "rss_growth_after_10pct_mib": round(growth, 1),
                                 "texts_per_s": round(total / benchmark.stats.stats.mean)})
    print(f"\nembed_iter over {total:,} texts: RSS {warm[0]:.0f} MiB at 10%, peak "
          f"{max(r for _, r in samples):.0f} MiB, growth {growth:.1f} MiB")
    assert growth < 32, f"RSS grew by {growth:.0f} MiB while streaming: memory is not bounded"


# -- The CPU backend close to its limit (issue 12): against the optimum O2 pipeline, same run ------


PEER_BATCH = 32
LIMIT: dict[str, Any] = {}  # the peer's seconds and vectors, our fp32 ORT vectors: for the rows run after them
# Issue 12's goals, recorded beside the figures (never asserted: the machine is shared).
LIMIT_GOALS = {"fp32": "speedup >= 1.25", "bf16": "speedup >= 2.5 at min cosine >= 0.99",
               "int8": "speedup >= 2.5 at min cosine >= 0.99"}


def bert_flops(lengths: np.ndarray, config: dict[str, Any]) -> float:
    """FLOPs (2 per multiply-add) of a BERT encoder over texts of these token lengths, each run at its own
    length (no padding): per token and layer, Q/K/V and output projections 8 H^2, feed-forward 4 H I, and
    attention's scores and weighted sum 4 L H over the text's L tokens. Embeddings and pooling are noise."""
    h, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    n = np.asarray(lengths, dtype=np.float64)
    return float(layers * (n * (8 * h * h + 4 * h * inner) + 4 * h * n * n).sum())


def hf_tokenizer(model_dir: Path) -> Any:
    """HF ``tokenizers`` from the model's tokenizer.json, cutting at 256 and not padding. MiniLM's file ships
    ``truncation: 128`` and ``padding: Fixed 128``: left alone they would pad and cut every text to 128."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(LIMIT_MAX_LENGTH)
    tokenizer.no_padding()
    return tokenizer


def ort_cpu_session(model: Path) -> Any:
    """onnxruntime on the CPU as a user opens it for 2 cores: 2 intra-op threads, 1 inter-op, all optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])


class OptimumPipeline:
    """The peer: optimum's O2 export on onnxruntime, fed by HF ``tokenizers`` in batches of 32 sorted by token
    length (longest first), each padded to its longest text, mean pooling and L2 normalisation on the host.
    Texts are tokenized once (the sort needs the lengths) and padded with numpy: its best shot."""

    def __init__(self, model: Path, model_dir: Path) -> None:
        self.session = ort_cpu_session(model)
        self.tokenizer = hf_tokenizer(model_dir)
        self.pad_id = self.tokenizer.token_to_id("[PAD]")
        self.padded_tokens = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(texts), PEER_BATCH):
            idx = order[start:start + PEER_BATCH]
            ids = np.full((len(idx), lengths[idx[0]]), self.pad_id, dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(idx):
                ids[row, :lengths[i]] = encodings[i].ids
                mask[row, :lengths[i]] = 1
            hidden = self.session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                              "token_type_ids": np.zeros_like(ids)})[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
            self.padded_tokens += ids.size
        assert out is not None
        return out


@pytest.fixture(scope="module")
def limit_texts(minilm_dir: Path, quick: bool) -> list[str]:
    return mixed_texts(100 if quick else 2000, minilm_dir / "vocab.txt", seed=LIMIT_SEED)


@pytest.fixture(scope="module")
def limit_workload(minilm_dir: Path, limit_texts: list[str]) -> dict[str, Any]:
    """Token counts and FLOPs of the texts at max_length 256 (HF's tokenizer; ours gives the same ids)."""
    lengths = np.array([len(e.ids) for e in hf_tokenizer(minilm_dir).encode_batch(limit_texts)])
    config = json.loads((minilm_dir / "config.json").read_text(encoding="utf-8"))
    return {"tokens": int(lengths.sum()), "gflop": bert_flops(lengths, config) / 1e9}


@pytest.fixture(scope="module")
def gemm_limit(tmp_path_factory: pytest.TempPathFactory) -> float:
    """This machine's fp32 GEMM rate in GFLOP/s on 2 onnxruntime threads, MiniLM's feed-forward shape
    ([4096, 384] x [384, 1536]), best of 20 after 2 s of warm-up (the rate climbs for ~1 s from idle here):
    the arithmetic limit the embedding rows are a share of."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = 4096, 384, 1536
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
    path = tmp_path_factory.mktemp("gemm") / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    session = ort_cpu_session(path)
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    warm_until = time.perf_counter() + 2
    while time.perf_counter() < warm_until:
        session.run(None, {"x": x})
    best = min(_seconds(lambda: session.run(None, {"x": x})) for _ in range(20))
    return 2 * m * k * n / best / 1e9


def _seconds(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _arithmetic(workload: dict[str, Any], seconds: float, limit: float) -> dict[str, Any]:
    achieved = workload["gflop"] / seconds
    return {"workload_gflop": round(workload["gflop"], 1), "achieved_gflop_per_s": round(achieved, 1),
            "fp32_gemm_gflop_per_s": round(limit, 1), "share_of_fp32_gemm_limit": round(achieved / limit, 3)}


def test_cpu_limit_peer_optimum_o2(benchmark, minilm_dir, limit_texts, limit_workload, gemm_limit, quick,
                                   tmp_path_factory):
    """optimum-cli's O2 export of MiniLM (from the peers venv, bench/peers.py) run as a user would: see
    ``OptimumPipeline``. Timed raw text -> vectors; its export is not timed."""
    benchmark.group = "embed-cpu-limit"
    out = tmp_path_factory.mktemp("optimum-o2")
    export_seconds = run_timed(optimum_export(minilm_dir, out))
    peer = OptimumPipeline(out / "model.onnx", minilm_dir)
    first_pass = _seconds(lambda: peer.embed(limit_texts))  # warm-up: every batch shape seen once
    peer.padded_tokens = 0
    rounds = 1 if quick else 3
    vectors = benchmark.pedantic(lambda: peer.embed(limit_texts), rounds=rounds, iterations=1)
    seconds = benchmark.stats.stats.mean
    LIMIT.update({"peer_seconds": seconds, "peer_min": benchmark.stats.stats.min, "peer": vectors})
    tokens = limit_workload["tokens"]
    padded = peer.padded_tokens // rounds
    benchmark.extra_info.update({
        "engine": "optimum O2 export + onnxruntime, HF tokenizers, batches of 32 by token length",
        "texts": len(limit_texts), "texts_per_s": round(len(limit_texts) / seconds, 1),
        "max_length": LIMIT_MAX_LENGTH, "threads": THREADS, "tokens": tokens, "padded_tokens": padded,
        "padding_fraction": round(1 - tokens / padded, 4), "optimum_export_seconds": round(export_seconds, 1),
        "first_pass_seconds": round(first_pass, 2),
        **_arithmetic(limit_workload, seconds, gemm_limit)})


def _limit_embedder(minilm_export: Path, backend: str, compute: str) -> Any:
    """Ours for one row: onnxruntime CPU (the export's own precision), or OpenVINO at ``compute``."""
    from mbexport import Embedder

    device, compute = ("cpu", "fp32") if backend == "ort" else ("openvino", compute)
    return Embedder(minilm_export, device=device, compute=compute, pooling="mean", normalize=True,
                    max_length=LIMIT_MAX_LENGTH, threads=THREADS)


# The least per-text cosine each row must keep, against the peer and our fp32 (correctness, not the goal):
# fp32 is the same model; a calibrated int8 or bf16 model promises 0.99; an int8 export (dynamic
# quantization, no calibration) promises 0.95, as tests/test_embedder.py checks.
LIMIT_FLOORS = {("ort", "fp32"): 0.99999, ("openvino", "fp32"): 0.99999, ("openvino", "bf16"): 0.99,
                ("openvino", "int8"): 0.99, ("ort", "int8"): 0.95}


@pytest.mark.parametrize(("backend", "compute"), list(LIMIT_FLOORS))
@pytest.mark.filterwarnings("ignore:Benchmark fixture was not used")  # the bf16 row on a CPU without bf16
def test_cpu_limit_mbexport(benchmark, request, minilm_dir, minilm_export, limit_texts, limit_workload, gemm_limit,
                            quick, tmp_path_factory, backend, compute):
    """Ours, raw text -> vectors, same texts and threads: ``Embedder(export, threads=2, max_length=256)`` on the
    fused fp32 export (onnxruntime), then ``device="openvino"`` at fp32, bf16 and int8 (int8 on a copy of the
    export calibrated with ``mbexport.calibrate`` on 320 other texts; calibration is not timed), and
    onnxruntime on the ``--precision int8`` export (conversion not timed)."""
    from mbexport._openvino import cpu_has_bf16
    from mbexport.errors import ArgumentError
    from mbexport.runtime import EmbedStats

    benchmark.group = "embed-cpu-limit"
    if compute == "bf16" and not cpu_has_bf16():
        # No bf16 arithmetic on this CPU (AVX512-BF16 / AMX): no figure to take; the row checks the refusal instead.
        with pytest.raises(ArgumentError, match="needs a CPU with bf16 arithmetic"):
            _limit_embedder(minilm_export, backend, compute)
        return
    info: dict[str, Any] = {}
    export = minilm_export
    if backend == "ort" and compute == "int8":
        from mbexport.converter import convert

        export = convert(str(minilm_dir), out=tmp_path_factory.mktemp("int8") / "minilm", head="base",
                         precision="int8", parity=False)
    elif compute == "int8":
        export, made = request.getfixturevalue("calibrated_export")  # only this row calibrates
        info.update(made)
    embedder = _limit_embedder(export, backend, compute)
    # Warm-up: every batch shape seen once (OpenVINO prepares and caches kernels per input shape), the
    # steady state of a service or a corpus job; the first pass is recorded beside it.
    info["first_pass_seconds"] = round(_seconds(lambda: embedder.embed(limit_texts)), 2)
    embedder.stats = EmbedStats()
    rounds = 1 if quick else 3
    vectors = benchmark.pedantic(lambda: embedder.embed(limit_texts), rounds=rounds, iterations=1)
    seconds = benchmark.stats.stats.mean
    tokens, padded = embedder.stats.tokens // rounds, embedder.stats.padded_tokens // rounds
    assert tokens == limit_workload["tokens"], "our tokenizer and HF's disagree on these texts"
    info.update({"engine": f"mbexport Embedder ({'onnxruntime' if backend == 'ort' else 'openvino'} {compute})",
                 "texts": len(limit_texts), "texts_per_s": round(len(limit_texts) / seconds, 1),
                 "max_length": LIMIT_MAX_LENGTH, "threads": THREADS, "tokens": tokens, "padded_tokens": padded,
                 "padding_fraction": round(1 - tokens / padded, 4), "goal": LIMIT_GOALS[compute],
                 **_arithmetic(limit_workload, seconds, gemm_limit)})
    if "peer_seconds" in LIMIT:
        info["speedup"] = round(LIMIT["peer_seconds"] / seconds, 2)
        info["speedup_min"] = round(LIMIT["peer_min"] / benchmark.stats.stats.min, 2)  # robust to load
        cos = _cosines(vectors, LIMIT["peer"])
        info.update({"min_cosine_vs_peer": round(float(cos.min()), 6), "mean_cosine_vs_peer": round(float(cos.mean()), 6)})
    if (backend, compute) == ("ort", "fp32"):
        LIMIT["ours_fp32"] = vectors
    elif "ours_fp32" in LIMIT:
        cos = _cosines(vectors, LIMIT["ours_fp32"])
        info.update({"min_cosine_vs_ours_fp32": round(float(cos.min()), 6),
                     "mean_cosine_vs_ours_fp32": round(float(cos.mean()), 6)})
    benchmark.extra_info.update(info)
    floor = LIMIT_FLOORS[backend, compute]
    for key in ("min_cosine_vs_peer", "min_cosine_vs_ours_fp32"):
        if key in info:
            assert info[key] >= floor, f"{info['engine']}: {key} {info[key]} < {floor}"


# -- GPU (skipped without CUDA + onnxruntime-gpu + a CUDA build of torch) ------------------------


def _cuda_ready() -> bool:
    from mbexport.runtime.session import cuda_problems

    return torch.cuda.is_available() and not cuda_problems()


needs_cuda = pytest.mark.skipif(not _cuda_ready(), reason="needs CUDA, onnxruntime-gpu and a CUDA build of torch")


@pytest.fixture(scope="module")
def bert_base_source(bert_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest's BERT-base-shaped checkpoint (2 layers with --quick), given a sentence-transformers Pooling
    config so that its exports' in-graph ``sentence_embedding`` is the mean."""
    src = tmp_path_factory.mktemp("gpu-src") / "bert-base"
    shutil.copytree(bert_checkpoint, src)
    chain = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (src / "modules.json").write_text(json.dumps(chain))
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "mean"}))
    (src / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_LENGTH}))
    return src


@pytest.fixture(scope="module")
def bert_base_fp16(bert_base_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BERT-base-shaped checkpoint as a fused fp16 base export (padded batches)."""
    from mbexport.converter import convert

    return Path(convert(str(bert_base_source), out=tmp_path_factory.mktemp("gpu") / "bert-base-fp16", head="base",
                        precision="fp16", parity=False))


@pytest.fixture(scope="module")
def bert_base_fp16_packed(bert_base_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint as a ``--flavor packed`` fp16 export: CUDA runs its padding-free graph."""
    from mbexport.converter import convert

    return Path(convert(str(bert_base_source), out=tmp_path_factory.mktemp("gpu") / "bert-base-fp16-packed",
                        head="base", precision="fp16", flavor="packed", parity=False))


def _torch_sdpa_fp16(checkpoint: Path):
    return transformers.BertModel.from_pretrained(str(checkpoint), attn_implementation="sdpa",
                                                  dtype=torch.float16).cuda().eval()


def _seconds_per_call(fn, rounds: int) -> float:
    """Median wall time of ``fn`` (which synchronises the device itself) over ``rounds`` after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 1024])
def test_gpu_session(benchmark, bert_base_fp16, bert_checkpoint, quick, batch):
    """Model only, B x 128 tokens, inputs already on the GPU (IO binding), the pooled [B, H]
    ``sentence_embedding`` bound on the device; PyTorch SDPA fp16 on the same card in the same run.
    Goals (issue 12): B=1024 >= 25,000 seq/s; B=1 <= 1.0 ms."""
    import onnxruntime as ort

    from mbexport.runtime.session import create_session

    benchmark.group = "gpu-session"
    batch = min(batch, 64) if quick else batch
    rounds = 5 if quick else 50
    session = create_session(bert_base_fp16 / "model.onnx", "cuda")
    ids = np.random.default_rng(0).integers(1000, 20000, (batch, 128)).astype(np.int64)
    binding = session.io_binding()
    for name, value in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", np.zeros_like(ids))):
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    binding.bind_output("sentence_embedding", "cuda")
    benchmark.pedantic(session.run_with_iobinding, args=(binding,), rounds=rounds, warmup_rounds=3, iterations=1)
    model = _torch_sdpa_fp16(bert_checkpoint)
    feeds = {"input_ids": torch.from_numpy(ids).cuda(), "attention_mask": torch.ones_like(torch.from_numpy(ids)).cuda()}

    def torch_run() -> None:
        with torch.inference_mode():
            model(**feeds)
        torch.cuda.synchronize()

    torch_s = _seconds_per_call(torch_run, rounds)
    ours_s = benchmark.stats.stats.median
    benchmark.extra_info.update({"batch": batch, "sequence": 128, "precision": "fp16", "output": "sentence_embedding",
                                 "seq_per_s": round(batch / ours_s), "latency_ms": round(ours_s * 1e3, 3),
                                 "torch_sdpa_fp16_seq_per_s": round(batch / torch_s),
                                 "torch_sdpa_fp16_latency_ms": round(torch_s * 1e3, 3),
                                 "speedup": round(torch_s / ours_s, 2), "device": torch.cuda.get_device_name()})


@pytest.mark.gpu
@needs_cuda
def test_gpu_end_to_end_vs_torch_sdpa(benchmark, bert_base_fp16, bert_checkpoint, minilm_dir, quick):
    """Raw text -> mean-pooled vectors, 50,000 mixed multilingual texts, max_length 128: Embedder(device="cuda")
    (native tokenizer, batcher, staged inputs, in-graph pooling) vs the HF fast tokenizer + transformers SDPA
    fp16 in length-sorted batches of 1024. Goal (issue 12): >= 45,000 texts/s."""
    from mbexport import Embedder

    benchmark.group = "gpu-end-to-end"
    texts = mixed_texts(500 if quick else 50_000, minilm_dir / "vocab.txt", seed=1)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bert_base_fp16))
    model = _torch_sdpa_fp16(bert_checkpoint)

    def torch_run() -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), 1024):
                idx = order[start:start + 1024]
                enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_LENGTH,
                                return_tensors="pt").to("cuda")
                hidden = model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                out[idx] = ((hidden * mask).sum(1) / mask.sum(1)).cpu().numpy()
        return out

    torch_run()
    started = time.perf_counter()
    reference = torch_run()
    torch_seconds = time.perf_counter() - started
    embedder = Embedder(bert_base_fp16, device="cuda", max_length=MAX_LENGTH)
    assert embedder.pooling == "mean" and embedder._reading(False)[0] == "sentence_embedding"
    embedder.embed(texts[:2048])
    vectors = benchmark.pedantic(lambda: embedder.embed(texts), rounds=3, iterations=1)
    cos = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info.update({"texts": len(texts), "texts_per_s": round(len(texts) / seconds),
                                 "torch_sdpa_fp16_texts_per_s": round(len(texts) / torch_seconds),
                                 "speedup": round(torch_seconds / seconds, 2),
                                 "min_cosine_vs_torch": round(float(cos.min()), 5),
                                 "mean_tokens": round(embedder.stats.tokens / max(embedder.stats.texts, 1), 1),
                                 "device": torch.cuda.get_device_name()})


@pytest.mark.gpu
@needs_cuda
def test_gpu_packed_vs_padded(benchmark, bert_base_fp16, bert_base_fp16_packed, minilm_dir, quick):
    """The same 50,000 mixed texts (500 with --quick), max_length 128, through Embedder(device="cuda") on the
    padded fused fp16 export and on the packed one (PackedAttention, no padding computed): the speed-up of
    packed over padded (issue 12), and how far apart their vectors are."""
    from mbexport import Embedder

    benchmark.group = "gpu-packed"
    texts = mixed_texts(500 if quick else 50_000, minilm_dir / "vocab.txt", seed=2)
    padded = Embedder(bert_base_fp16, device="cuda", max_length=MAX_LENGTH)
    packed = Embedder(bert_base_fp16_packed, device="cuda", max_length=MAX_LENGTH)
    assert packed.packed and not padded.packed
    padded.embed(texts[:2048])
    packed.embed(texts[:2048])
    rounds = 1 if quick else 3
    padded_s = _seconds_per_call(lambda: padded.embed(texts), rounds)
    want = padded.embed(texts)
    vectors = benchmark.pedantic(lambda: packed.embed(texts), rounds=rounds, iterations=1)
    packed_s = benchmark.stats.stats.median
    cos = (vectors * want).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(want, axis=1)
    benchmark.extra_info.update({"texts": len(texts), "packed_texts_per_s": round(len(texts) / packed_s),
                                 "padded_texts_per_s": round(len(texts) / padded_s),
                                 "speedup": round(padded_s / packed_s, 2),
                                 "padded_over_real_tokens": round(padded.stats.padded_tokens / padded.stats.tokens, 3),
                                 "min_cosine_packed_vs_padded": round(float(cos.min()), 6),
                                 "max_abs_packed_vs_padded": float(np.abs(vectors - want).max()),
                                 "device": torch.cuda.get_device_name()})
    assert float(cos.min()) >= 0.999, "packed and padded vectors disagree"
