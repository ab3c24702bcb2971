"""The runtime backend seam: a device string picks a backend; the Embedder on top of it reads the
graph's pooled output and gives the rows sentence-transformers and host pooling give; CUDA without a
GPU fails clearly and ``auto`` falls back with one plain line on stderr."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mbexport import Embedder
from mbexport.errors import ArgumentError, CudaUnavailableError
from mbexport.runtime.backends import BACKENDS, DEVICES, Backend
from mbexport.runtime.backends.cpu import OrtCpu
from mbexport.runtime.session import cuda_problems

TEXTS = ["All human beings are born free and equal in dignity and rights.", "", "ok",
         "Alle Menschen sind frei und gleich an Würde und Rechten geboren.", "人人生而自由，在尊严和权利上一律平等。",
         "The quick brown fox jumps over the lazy dog. " * 30, "tokenization of antidisestablishmentarianism"]
NO_CUDA = pytest.mark.skipif(not cuda_problems(), reason="CUDA is usable here")


@pytest.fixture(scope="module")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return Path(convert(str(minilm_dir), out=tmp_path_factory.mktemp("backends") / "minilm", head="base",
                        parity=False))


@pytest.fixture(scope="module")
def old_export(minilm_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same export as one made before ``sentence_embedding`` existed: the Embedder pools on the host."""
    old = tmp_path_factory.mktemp("old") / "minilm"
    shutil.copytree(minilm_export, old)
    manifest = json.loads((old / "mbexport.json").read_text())
    del manifest["sentence_embedding"]
    manifest["outputs"].remove("sentence_embedding")
    (old / "mbexport.json").write_text(json.dumps(manifest))
    return old


@pytest.fixture(scope="module")
def sentence_transformer(minilm_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def test_registry_names_every_device():
    assert DEVICES == ("cpu", "cuda", "openvino", "tensorrt", "auto") and set(BACKENDS) == set(DEVICES[:-1])
    assert all(issubclass(cls, Backend) and cls.name == name for name, cls in BACKENDS.items())
    assert {cls.device for cls in BACKENDS.values()} == {"cpu", "cuda"}


def test_cpu_backend_is_chosen_by_device_string(minilm_export):
    emb = Embedder(minilm_export, device="cpu")
    assert type(emb.backend) is OrtCpu and emb.device == "cpu"
    assert emb.backend.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    with pytest.raises(ArgumentError, match="device must be one of cpu, cuda, openvino, tensorrt, auto, got 'gpu'"):
        Embedder(minilm_export, device="gpu")


def test_embedder_reads_the_pooled_output_and_matches_sentence_transformers(minilm_export, old_export,
                                                                              sentence_transformer):
    emb, old = Embedder(minilm_export), Embedder(old_export)
    assert emb._reading(True) == ("sentence_embedding", None, False)
    assert old._reading(True) == ("last_hidden_state", "mean", True)
    ours, host = emb.embed(TEXTS), old.embed(TEXTS)
    assert np.abs(ours - host).max() <= 1e-5  # unchanged vs host pooling
    want = sentence_transformer.encode(TEXTS, convert_to_numpy=True)
    assert np.abs(ours - want).max() <= 1e-5
    assert emb.stats.texts == len(TEXTS) and emb.stats.truncated == 1


def test_other_pooling_or_no_normalisation_falls_back_to_host_pooling(minilm_export, minilm_dir,
                                                                      sentence_transformer):
    """The export's output is mean + normalised; a cls request, or normalize=False for one call, reads the
    hidden states and pools on the host -- rows equal to sentence-transformers without its Normalize."""
    from sentence_transformers import SentenceTransformer

    emb = Embedder(minilm_export)
    ids, cu = emb.tokenize(TEXTS)
    assert emb._reading(False) == ("last_hidden_state", "mean", False)
    unnormalised = SentenceTransformer(modules=[sentence_transformer[0], sentence_transformer[1]], device="cpu")
    want = unnormalised.encode(TEXTS, convert_to_numpy=True)
    assert np.abs(emb.embed_tokenized(ids, cu, normalize=False) - want).max() <= 1e-4
    cls = Embedder(minilm_export, pooling="cls", normalize=False)
    assert cls._reading(False) == ("last_hidden_state", "cls", False)
    features = sentence_transformer.tokenize(TEXTS)
    hidden = sentence_transformer[0]({k: v for k, v in features.items()})["token_embeddings"]
    assert np.abs(cls.embed(TEXTS) - hidden[:, 0].detach().numpy()).max() <= 1e-4


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_device_without_gpu_is_clear(minilm_export, device):
    with pytest.raises(CudaUnavailableError, match=f"device='{device}' is not usable here") as info:
        Embedder(minilm_export, device=device)
    assert "CUDAExecutionProvider" in str(info.value)  # lists what is missing
    assert str(info.value).endswith("Use device='cpu', or device='auto' to fall back to CPU.")


@NO_CUDA
def test_auto_falls_back_with_one_plain_line(minilm_export):
    """Two auto Embedders in one process: exactly one line on stderr, no warnings-module source line."""
    script = ("import sys; from mbexport import Embedder\n"
              "a = Embedder(sys.argv[1], device='auto'); b = Embedder(sys.argv[1], device='auto')\n"
              "print(a.device, b.device, a.embed(['fallback works']).shape)")
    result = subprocess.run([sys.executable, "-c", script, str(minilm_export)], capture_output=True, text=True,
                            timeout=300, cwd=tempfile.gettempdir(), check=False)  # not the source folder
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cpu cpu (1, 384)\n"
    why = "; ".join(p.splitlines()[0] for p in cuda_problems())
    assert result.stderr == f"mbexport: device='auto' found no usable CUDA ({why}); running on CPU\n"
