"""The in-graph ``sentence_embedding`` output: equal to host pooling of the same run, to the model's
own sentence-transformers pipeline, covered by parity and recorded in the manifest."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_mbexport, write_tiny_checkpoint

from mbexport.catalog import Source
from mbexport.export.build import build_model
from mbexport.layout import SENTENCE_EMBEDDING as OUTPUT
from mbexport.layout import PooledOutput
from mbexport.parity import check_parity, random_batch, text_batch
from mbexport.runtime.pooling import l2_normalize, pool
from mbexport.semantics import EmbeddingSemantics
from mbexport.sources import load_checkpoint

POOLINGS = [("cls", False), ("cls", True), ("mean", False), ("mean", True), ("pooler", False), ("pooler", True)]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("pooled") / "base", head="base", fmt="safetensors", seed=5)


def checkpoint_with(path: Path, pooling: str, normalize: bool):
    checkpoint = load_checkpoint(Source(label=path.name, path=path))
    return dataclasses.replace(checkpoint, embedding=EmbeddingSemantics(pooling, normalize, None, "option"))


def session_for(built, tmp_path: Path) -> ort.InferenceSession:
    path = tmp_path / "model.onnx"
    path.write_bytes(built.model.SerializeToString())
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("flavor", ["fused", "portable"])
@pytest.mark.parametrize(("pooling", "normalize"), POOLINGS)
def test_in_graph_pooling_equals_host_pooling(tiny_base, tmp_path, flavor, pooling, normalize):
    built = build_model(checkpoint_with(tiny_base, pooling, normalize), head="base", flavor=flavor)
    assert built.outputs == ["last_hidden_state", "pooler_output", OUTPUT]
    assert built.pooled == PooledOutput(pooling, normalize)
    session = session_for(built, tmp_path)
    checkpoint = checkpoint_with(tiny_base, pooling, normalize)
    for feeds in (random_batch(checkpoint.spec, seed=1), text_batch(tiny_base, checkpoint.spec)):
        hidden, pooler, pooled = session.run(None, feeds)
        source = pooler if pooling == "pooler" else hidden
        want = pool(source, feeds["attention_mask"], pooling)
        if normalize:
            want = l2_normalize(want)
        assert pooled.shape == want.shape == (len(feeds["input_ids"]), checkpoint.spec.hidden_size)
        assert np.abs(pooled - want).max() <= 1e-5
        if normalize:
            np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-6)


def test_padding_never_reaches_the_mean(tiny_base, tmp_path):
    """A padded position whose ids differ changes nothing: the mean counts real tokens only."""
    checkpoint = checkpoint_with(tiny_base, "mean", False)
    session = session_for(build_model(checkpoint, head="base", flavor="portable"), tmp_path)
    feeds = random_batch(checkpoint.spec, seed=2)
    other = {k: v.copy() for k, v in feeds.items()}
    other["input_ids"][feeds["attention_mask"] == 0] = 7
    assert (other["input_ids"] != feeds["input_ids"]).any()
    first, second = (session.run([OUTPUT], f)[0] for f in (feeds, other))
    np.testing.assert_array_equal(first, second)


def test_graph_parts_and_fp16(tiny_base, tmp_path):
    """Mean + normalize emits its nodes once; in fp16 the pooling reads the float32 outputs and
    stays within fp16 parity of the fp32 export's pooled rows."""
    checkpoint = checkpoint_with(tiny_base, "mean", True)
    fp32 = build_model(checkpoint, head="base", flavor="fused")
    fp16 = build_model(checkpoint, head="base", flavor="fused", precision="fp16")
    added = Counter(fp32.op_counts()) - Counter(build_model(checkpoint_with(tiny_base, "cls", False), head="base",
                                                            flavor="fused").op_counts())
    assert added == {"Where": 1, "ReduceSum": 2, "ReduceL2": 1, "Max": 2, "Div": 2, "Unsqueeze": 1, "Cast": 2}
    pooled_input = next(n for n in fp16.skeleton.graph.node if n.name == "pooling/Where").input[1]
    assert pooled_input == "last_hidden_state"
    feeds = random_batch(checkpoint.spec, seed=4)
    a = session_for(fp32, tmp_path).run([OUTPUT], feeds)[0]
    (tmp_path / "16").mkdir()
    b = session_for(fp16, tmp_path / "16").run([OUTPUT], feeds)[0]
    assert b.dtype == np.float32 and np.abs(a - b).max() <= 2e-2


def test_heads_without_hidden_states_have_no_pooled_output(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "qa", head="qa", fmt="safetensors")
    built = build_model(load_checkpoint(Source(label="qa", path=src)), head="qa")
    assert OUTPUT not in built.outputs and built.pooled is None


def test_parity_covers_the_pooled_output(tiny_base, tmp_path):
    checkpoint = checkpoint_with(tiny_base, "mean", True)
    built = build_model(checkpoint, head="base")
    path = tmp_path / "model.onnx"
    path.write_bytes(built.model.SerializeToString())
    report = check_parity(path, checkpoint, built.head, "fp32", reference="torch")
    figures = {o.name: o for o in report.outputs}
    assert report.passed and figures[OUTPUT].max_abs <= 1e-5, report.to_dict()
    assert figures[OUTPUT].argmax_agreement is None and figures[OUTPUT].tolerance == 1e-4


def test_minilm_export_matches_sentence_transformers(minilm_dir, tmp_path):
    """The real all-MiniLM-L6-v2: mean pooling + Normalize from its own files, in the graph, equal to
    sentence-transformers on the same tokens; the manifest says what the output holds."""
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "minilm"
    result = run_mbexport("convert", str(minilm_dir), "--out", str(out), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "mbexport.json").read_text())
    assert manifest[OUTPUT] == {"pooling": "mean", "normalize": True}
    assert OUTPUT in manifest["outputs"] and manifest["parity"]["outputs"][OUTPUT]["max_abs"] <= 1e-4
    texts = ["The quick brown fox jumps over the lazy dog.", "a", "Ceci n'est pas une pipe.",
             "東京は日本の首都です。", "embedding " * 40]
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    features = st.tokenize(texts)
    feeds = {k: features[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    pooled = session.run([OUTPUT], feeds)[0]
    want = st.encode(texts, convert_to_numpy=True)
    assert np.abs(pooled - want).max() <= 1e-5
