"""A ``--flavor packed`` export end to end on CPU: the console script writes both graphs and the manifest
record; the CPU Embedder reads the padded ``model.onnx`` exactly as for a fused export (onnxruntime has no
CPU PackedAttention); and the CUDA backend's packed batching -- the Embedder choosing the packed graph and a
packed plan, the Batcher's arrays, rows scattered back, ``last_hidden_state`` restored for host pooling --
run with the packed graph evaluated by the onnx reference runtime in place of the GPU (the one piece that
needs CUDA; tests/test_packed_gpu.py runs the real thing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_mbexport, write_tiny_checkpoint
from packed_reference import evaluator

import mbexport
from mbexport import Embedder
from mbexport.errors import ExportDirError
from mbexport.layout import MANIFEST, MODEL, PACKED_INPUTS, PACKED_MODEL, read_manifest
from mbexport.runtime import embedder as embedder_module
from mbexport.runtime.backends import BACKENDS
from mbexport.runtime.backends.cuda import OrtCuda

TEXTS = ["hello world", "", "the model is fast", "a", "bert " * 80, "seed step export on nx", "it is",
         "text token model"] * 5


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packed_exports")
    source = write_tiny_checkpoint(root / "src", head="base", fmt="safetensors", seed=11)
    proc = run_mbexport("convert", str(source), "--out", str(root / "packed"), "--head", "base", "--flavor", "packed")
    assert proc.returncode == 0, proc.stderr.decode()
    # The API for the other: its parity shares this process's reference worker (a console script run starts one)
    fused = mbexport.convert(str(source), out=root / "fused", head="base", flavor="fused")
    return {"fused": fused, "packed": root / "packed"}


def test_packed_export_directory(exports):
    export = exports["packed"]
    manifest = read_manifest(export)
    assert manifest["flavor"] == "packed" and set(manifest["files"]) == {MODEL, PACKED_MODEL}
    record = manifest["packed"]
    assert record["model"] == PACKED_MODEL and record["inputs"] == list(PACKED_INPUTS)
    assert record["outputs"] == manifest["outputs"] == ["last_hidden_state", "pooler_output", "sentence_embedding"]
    assert record["op_counts"]["PackedAttention"] == 2 and "Attention" not in record["op_counts"]
    assert manifest["op_counts"]["Attention"] == 2 and manifest["parity"]["passed"]  # model.onnx: padded, verified
    packed = onnx.load(export / PACKED_MODEL)
    assert [i.name for i in packed.graph.input] == list(PACKED_INPUTS)
    assert [i.name for i in onnx.load(export / MODEL).graph.input] == ["input_ids", "attention_mask",
                                                                       "token_type_ids"]


def test_cpu_embedder_reads_the_padded_graph(exports):
    """Nothing changes on CPU: same session inputs, padded plan, the same vectors as the fused export's."""
    packed = Embedder(exports["packed"], device="cpu", threads=1)
    fused = Embedder(exports["fused"], device="cpu", threads=1)
    assert not packed.packed and packed.backend.model_path.name == MODEL
    assert packed.backend.inputs == fused.backend.inputs
    np.testing.assert_array_equal(packed.embed(TEXTS), fused.embed(TEXTS))
    assert packed.stats.padded_tokens == fused.stats.padded_tokens > packed.stats.tokens


class ReferenceDevice(OrtCuda):
    """OrtCuda with its device step -- one packed batch through the session -- done by the onnx reference
    runtime: every other line of its packed path runs as on the GPU."""

    def __init__(self, model_path: Path, threads: int | None, capacity: int, spin: bool = True,
                 compute: str = "fp32") -> None:
        self.model_path = model_path
        model = onnx.load(model_path)
        self.inputs = [i.name for i in model.graph.input]
        self.packed = "cu_seqlens" in self.inputs
        self.session = evaluator(model) if self.packed else None  # the padded graph is only opened here

    def _run_packed(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        assert self.session is not None
        return self.session.run([output], feeds)[0]


@pytest.fixture
def reference_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "cuda", ReferenceDevice)
    monkeypatch.setattr(embedder_module, "resolve_device", lambda device: device)


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_cuda_backend_runs_packed_batches(exports, reference_cuda, pooling):
    """The export's own pooling (cls) comes from the packed graph's sentence_embedding; mean and pooler are
    pooled on the host from last_hidden_state (restored to [rows, width, H]) and pooler_output."""
    cuda = Embedder(exports["packed"], device="cuda", pooling=pooling, max_length=24, batch_tokens=48)
    assert cuda.packed and cuda.backend.packed and cuda.backend.model_path.name == PACKED_MODEL
    cpu = Embedder(exports["packed"], device="cpu", pooling=pooling, max_length=24, batch_tokens=48)
    ours, want = cuda.embed(TEXTS), cpu.embed(TEXTS)
    assert ours.shape == want.shape == (len(TEXTS), cuda.hidden_size)
    assert np.abs(ours - want).max() <= 1e-5
    assert cuda.stats.padded_tokens == cuda.stats.tokens == cpu.stats.tokens  # no padding computed
    assert cuda.stats.batches > 1 and cuda.stats.truncated == cpu.stats.truncated == 5


def test_fused_export_and_tensorrt_stay_padded(exports, reference_cuda):
    assert not BACKENDS["tensorrt"].runs_packed and not BACKENDS["cpu"].runs_packed
    emb = Embedder(exports["fused"], device="cuda")  # no packed graph in the export: padded, model.onnx
    assert not emb.packed and not emb.backend.packed and emb.backend.model_path.name == MODEL


def test_malformed_packed_record_is_refused(exports, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exports["packed"], copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["packed"] = {"model": "elsewhere.onnx"}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportDirError, match=r"'packed' must be .*model.packed.onnx"):
        Embedder(copy)
