"""The CUDA path end to end (marked ``gpu``; skipped where CUDA or onnxruntime-gpu is missing): the real
all-MiniLM-L6-v2, fp32 and fp16 exports, raw multilingual text through ``Embedder(device="cuda")`` --
staged inputs, IO binding, the in-graph pooled output copied back -- against PyTorch fp32 (transformers,
mean pooling and normalisation as the model's sentence-transformers config says). bench/gpu/run.sh runs
this file on the GPU machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MULTILINGUAL_TEXTS

from mbexport import Embedder
from mbexport.runtime.backends import BACKENDS
from mbexport.runtime.session import cuda_problems

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(cuda_problems()), reason="needs CUDA and onnxruntime-gpu")]
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = MULTILINGUAL_TEXTS * 40  # 520 texts: several batches, every length bucket


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def export(request: pytest.FixtureRequest, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("gpu") / request.param, head="base",
                        precision=request.param, parity=False))


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> np.ndarray:
    """PyTorch fp32 on the CPU: mean over real tokens, L2-normalised (what all-MiniLM-L6-v2 means), 256 tokens."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    model = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager").eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(TEXTS), 64):
            enc = tokenizer(TEXTS[start:start + 64], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            rows.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=1))
    return torch.cat(rows).numpy()


def figures(ours: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    cosine = (ours * want).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(want, axis=1)
    return float(cosine.mean()), float(np.abs(ours - want).max())


def test_cuda_embedder_matches_pytorch(export, reference):
    emb = Embedder(export, device="cuda")
    assert type(emb.backend) is BACKENDS["cuda"] and emb._reading(True)[0] == "sentence_embedding"
    ours = emb.embed(TEXTS)
    mean_cosine, max_abs = figures(ours, reference)
    print(f"\n{export.name} CUDA vs PyTorch fp32: mean cosine {mean_cosine:.6f}, max |diff| {max_abs:.2e}")
    assert mean_cosine >= 0.9999 and max_abs <= 2e-2
    assert emb.stats.texts == len(TEXTS) and emb.stats.batches >= 1
    np.testing.assert_allclose(ours, Embedder(export, device="cpu").embed(TEXTS), atol=2e-2)


def test_cuda_host_pooling_fallback(export, reference):
    """cls pooling on a mean export reads last_hidden_state from the device and pools on the host."""
    emb = Embedder(export, device="cuda", pooling="cls")
    assert emb._reading(True) == ("last_hidden_state", "cls", True)
    cpu = Embedder(export, device="cpu", pooling="cls").embed(TEXTS[:50])
    assert figures(emb.embed(TEXTS[:50]), cpu)[0] >= 0.9999


@pytest.mark.skipif(bool(BACKENDS["tensorrt"].problems()), reason="onnxruntime's TensorRT EP is not usable here")
def test_tensorrt_backend_matches_pytorch(export, reference):
    emb = Embedder(export, device="tensorrt")
    mean_cosine, max_abs = figures(emb.embed(TEXTS), reference)
    assert mean_cosine >= 0.9999 and max_abs <= 2e-2
