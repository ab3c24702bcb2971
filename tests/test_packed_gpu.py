"""The packed flavor on CUDA (marked ``gpu``; skipped where CUDA or onnxruntime-gpu is missing): the real
all-MiniLM-L6-v2 as ``--flavor packed`` exports in fp32 and fp16, the padding-free graph run by onnxruntime's
CUDA PackedAttention on the native Batcher's packed arrays, against PyTorch fp32 (transformers, eager, on the
CPU) per real token and per pooled row, against the padded graph of the same export on the same GPU, and
``Embedder(device="cuda")`` end to end on raw multilingual text. Bounds: the issue's fp16 ones for both
precisions (mean cosine >= 0.9999, max |diff| <= 2e-2), as tests/test_gpu.py holds the padded graph to,
since onnxruntime's CUDA fp32 GEMMs may use TF32. bench/gpu/run.sh runs this file on the GPU machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MULTILINGUAL_TEXTS

from mbexport import Embedder, _native
from mbexport.layout import MODEL, PACKED_INPUTS, PACKED_MODEL
from mbexport.runtime.session import create_session, cuda_problems
from mbexport.tokenizer import WordPieceTokenizer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(cuda_problems()), reason="needs CUDA and onnxruntime-gpu")]
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = MULTILINGUAL_TEXTS * 30  # 390 texts: several packed batches at a small budget, every length
MAX_LENGTH = 256


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def export(request: pytest.FixtureRequest, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("packed-gpu") / request.param, head="base",
                        precision=request.param, flavor="packed", parity=False))


def figures(ours: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    ours, want = ours.astype(np.float64), want.astype(np.float64)
    cosine = (ours * want).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(want, axis=-1)
    return float(cosine.mean()), float(np.abs(ours - want).max())


def test_packed_graph_parity_on_cuda(export, minilm_dir):
    """Per batch: the packed graph's last_hidden_state (real tokens) and sentence_embedding against PyTorch fp32
    on the same padded batch, and against the export's padded graph on the same GPU."""
    tokenizer = WordPieceTokenizer.from_pretrained(export)
    ids, _, cu, _ = tokenizer.encode_batch_arrays(TEXTS, max_length=MAX_LENGTH + 1)
    make = lambda: _native.Batcher(ids, cu, max_length=MAX_LENGTH, batch_tokens=4096, packed=True)  # noqa: E731
    packed_plan, padded_plan = make(), make()
    assert len(packed_plan) > 1
    packed = create_session(export / PACKED_MODEL, "cuda")
    padded = create_session(export / MODEL, "cuda")
    model = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager").eval()
    hidden_figures, pooled_figures, same_gpu = [], [], []
    for b in range(len(packed_plan)):
        _, *arrays = packed_plan.packed(b)
        _, input_ids, mask, types = padded_plan.padded(b)
        real = mask.astype(bool)
        ours = dict(zip([o.name for o in packed.get_outputs()], packed.run(None, dict(zip(PACKED_INPUTS, arrays)))))
        theirs = dict(zip([o.name for o in padded.get_outputs()],
                          padded.run(None, {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types})))
        with torch.inference_mode():
            hidden = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask),
                           token_type_ids=torch.from_numpy(types)).last_hidden_state.numpy()
        weights = mask[:, :, None].astype(np.float64)
        mean = (hidden * weights).sum(1) / weights.sum(1)
        want_pooled = mean / np.linalg.norm(mean, axis=1, keepdims=True)  # the model's mean + Normalize
        assert ours["last_hidden_state"].shape == (int(real.sum()), hidden.shape[-1])
        hidden_figures.append(figures(ours["last_hidden_state"], hidden[real]))
        pooled_figures.append(figures(ours["sentence_embedding"], want_pooled))
        same_gpu.append(figures(ours["last_hidden_state"], theirs["last_hidden_state"][real]))
    for name, values in (("last_hidden_state", hidden_figures), ("sentence_embedding", pooled_figures),
                         ("packed vs padded, same GPU", same_gpu)):
        mean_cosine, max_abs = min(c for c, _ in values), max(d for _, d in values)
        print(f"\n{export.name} packed {name}: worst batch mean cosine {mean_cosine:.6f}, max |diff| {max_abs:.2e}")
        assert mean_cosine >= 0.9999 and max_abs <= 2e-2


def test_cuda_embedder_runs_packed(export, minilm_dir):
    """Raw text through Embedder(device="cuda"): the packed graph and plan are chosen, no padding is computed,
    and the vectors match the CPU Embedder (padded graph) of the same export."""
    emb = Embedder(export, device="cuda", max_length=MAX_LENGTH)
    assert emb.packed and emb.backend.packed and emb.backend.model_path.name == PACKED_MODEL
    assert emb._reading(True)[0] == "sentence_embedding"
    ours = emb.embed(TEXTS)
    assert emb.stats.padded_tokens == emb.stats.tokens and emb.stats.texts == len(TEXTS)
    mean_cosine, max_abs = figures(ours, Embedder(export, device="cpu", max_length=MAX_LENGTH).embed(TEXTS))
    print(f"\n{export.name} packed CUDA Embedder vs CPU: mean cosine {mean_cosine:.6f}, max |diff| {max_abs:.2e}")
    assert mean_cosine >= 0.9999 and max_abs <= 2e-2
    # host pooling from the packed last_hidden_state (restored to [rows, width, H] by the backend)
    cls = Embedder(export, device="cuda", pooling="cls", max_length=MAX_LENGTH)
    assert cls._reading(True) == ("last_hidden_state", "cls", True)
    mean_cosine, max_abs = figures(cls.embed(TEXTS[:60]),
                                   Embedder(export, device="cpu", pooling="cls", max_length=MAX_LENGTH).embed(TEXTS[:60]))
    assert mean_cosine >= 0.9999 and max_abs <= 2e-2
