"""Inference speed on CPU (and CUDA when present): mbexport exports vs PyTorch eager and SDPA.

One BERT-base-shaped model (2 layers in --quick), random ids, full attention mask, over a
batch x sequence grid. Each (engine, shape) is one benchmark in the group ``inference-cpu``;
the PyTorch engines run first at each shape so every mbexport row carries ``speedup`` =
PyTorch SDPA time / its time, both measured in this run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FULL_GRID = [(1, 64), (32, 64), (1, 128), (8, 128), (32, 128)]
QUICK_GRID = [(1, 16), (4, 32)]
ENGINES = ["torch-eager-fp32", "torch-sdpa-fp32", "mbexport-fused-fp32", "mbexport-portable-fp32",
           "mbexport-fused-fp16", "mbexport-fused-int8"]
BASELINE = "torch-sdpa-fp32"
TIMES: dict[tuple[int, int, str], float] = {}


def grid(quick: bool) -> list[tuple[int, int]]:
    return QUICK_GRID if quick else FULL_GRID


@pytest.fixture(scope="module")
def exports(bert_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mbexport.converter import convert

    root = tmp_path_factory.mktemp("inference-exports")
    made = {}
    for flavor, precision in (("fused", "fp32"), ("portable", "fp32"), ("fused", "fp16"), ("fused", "int8")):
        made[f"mbexport-{flavor}-{precision}"] = convert(str(bert_checkpoint), out=root / f"{flavor}-{precision}",
                                                         head="base", flavor=flavor, precision=precision,
                                                         parity=False)
    return made


def feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def torch_runner(checkpoint: Path, attention: str, inputs: dict[str, np.ndarray]):
    torch.set_num_threads(torch.get_num_threads())
    model = transformers.BertModel.from_pretrained(checkpoint, attn_implementation=attention).eval()
    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}

    def run() -> None:
        with torch.inference_mode():
            model(**tensors)

    return run


def onnx_runner(path: Path, inputs: dict[str, np.ndarray]):
    from mbexport.runtime.session import create_session

    session = create_session(path / "model.onnx", device="cpu")
    return lambda: session.run(None, inputs)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The grid of this mode only (quick or full): no test is collected just to be skipped."""
    if "shape" in metafunc.fixturenames:
        shapes = grid(bool(metafunc.config.getoption("--quick")))
        metafunc.parametrize("shape", shapes, ids=[f"B{b}-S{s}" for b, s in shapes])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("engine", ENGINES)
def test_inference(benchmark, engine, shape, quick, bert_checkpoint, exports):
    batch, seq = shape
    inputs = feeds(batch, seq)
    if engine.startswith("torch"):
        run = torch_runner(bert_checkpoint, "eager" if "eager" in engine else "sdpa", inputs)
    else:
        run = onnx_runner(exports[engine], inputs)
    run()  # warm-up: session/graph setup is not what this measures
    benchmark.group = "inference-cpu"
    benchmark.pedantic(run, rounds=2 if quick else 5, iterations=1)
    mean = benchmark.stats.stats.mean
    TIMES[(batch, seq, engine)] = mean
    benchmark.extra_info.update({"engine": engine, "batch": batch, "sequence": seq,
                                 "seq_per_s": round(batch / mean, 1)})
    if (batch, seq, BASELINE) in TIMES and engine != BASELINE:
        benchmark.extra_info["speedup"] = round(TIMES[(batch, seq, BASELINE)] / mean, 2)
