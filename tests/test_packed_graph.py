"""The ``packed`` flavor's padding-free graph (export/packed.py): well-formed, one PackedAttention per layer
and no padded attention, inputs and outputs as declared, and -- run by the onnx reference runtime with
numpy contrib ops written from their schemas (tests/packed_reference.py), since onnxruntime has no CPU
kernel for PackedAttention -- equal to the padded fused fp32 export run by onnxruntime on the same texts.

Tolerances: tiny random checkpoints, every output <= 1e-5 max |diff| (measured ~1e-6: float64 numpy
vs onnxruntime's float32 kernels); MiniLM (384 hidden, 6 layers) last_hidden_state <= 2e-5 (measured
3.1e-6; DESIGN's fp32 parity bound is 1e-4) and sentence_embedding <= 1e-5 (the in-graph pooling bound).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import TINY_CONFIG, run_mbexport, scale_random_weights, tiny_vocab, write_tiny_checkpoint
from packed_reference import evaluator

from mbexport import _native
from mbexport.catalog import Source
from mbexport.errors import ExportError
from mbexport.export.build import build_model
from mbexport.layout import PACKED_INPUTS, PooledOutput
from mbexport.semantics import EmbeddingSemantics
from mbexport.sources import load_checkpoint
from mbexport.tokenizer import WordPieceTokenizer

POOLINGS = [("cls", False), ("cls", True), ("mean", False), ("mean", True), ("pooler", False), ("pooler", True)]
TEXTS = ["hello world", "", "the model is fast and the text is a token", "a", "bert " * 40,
         "seed step export on nx", "it is"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("packed") / "base", head="base", fmt="safetensors", seed=7)


def checkpoint_with(path: Path, pooling: str | None = None, normalize: bool = False):
    checkpoint = load_checkpoint(Source(label=path.name, path=path))
    if pooling is None:
        return checkpoint
    return dataclasses.replace(checkpoint, embedding=EmbeddingSemantics(pooling, normalize, None, "option"))


def batchers(model_dir: Path, texts: list[str], max_length: int, batch_tokens: int):
    """The same tokenized texts planned twice by the native Batcher in packed mode: one for the packed
    view, one for the padded view of the same batches."""
    tokenizer = WordPieceTokenizer.from_pretrained(model_dir)
    ids, types, cu, _ = tokenizer.encode_batch_arrays(texts, max_length=max_length + 1)  # the Batcher truncates
    types = (np.arange(len(ids)) % 2).astype(np.int32)  # both segments, so token_type_ids matter
    make = lambda: _native.Batcher(ids, cu, max_length=max_length, batch_tokens=batch_tokens,  # noqa: E731
                                   packed=True, type_ids=types)
    return make(), make()


def padded_session(built, tmp_path: Path) -> ort.InferenceSession:
    path = tmp_path / "model.onnx"
    path.write_bytes(built.model.SerializeToString())
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_both(built, tmp_path: Path, packed_batcher, padded_batcher):
    """(packed outputs, padded outputs, padded mask) per batch."""
    session = padded_session(built, tmp_path)
    reference = evaluator(built.packed.model)
    names = [o.name for o in session.get_outputs()]
    assert names == built.packed.outputs
    for b in range(len(packed_batcher)):
        indices, *arrays = packed_batcher.packed(b)
        p_indices, input_ids, mask, types = padded_batcher.padded(b)
        assert indices.tolist() == p_indices.tolist()
        ours = dict(zip(names, reference.run(None, dict(zip(PACKED_INPUTS, arrays)))))
        want = dict(zip(names, session.run(None, {"input_ids": input_ids, "attention_mask": mask,
                                                   "token_type_ids": types})))
        yield ours, want, mask


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_packed_graph_is_well_formed(tiny_base, precision):
    checkpoint = checkpoint_with(tiny_base)
    built = build_model(checkpoint, head="base", flavor="packed", precision=precision)
    layers = checkpoint.spec.num_layers
    assert built.flavor == "packed" and built.packed is not None and built.packed.flavor == "packed"
    model = built.packed.model
    onnx.checker.check_model(model, full_check=True)
    counts = Counter(node.op_type for node in model.graph.node)
    assert counts["PackedAttention"] == layers == 2
    assert counts["Attention"] == counts["MultiHeadAttention"] == counts["PackedMultiHeadAttention"] == 0
    assert counts["EmbedLayerNormalization"] == 1
    assert counts["SkipLayerNormalization"] == 2 * layers and counts["BiasGelu"] == layers
    assert {n.domain for n in model.graph.node if n.op_type == "PackedAttention"} == {"com.microsoft"}
    # Inputs: int32, [tokens] x3, token_offset [batch, sequence], cu_seqlens [batch + 1]
    dims = {i.name: (i.type.tensor_type.elem_type, [d.dim_param for d in i.type.tensor_type.shape.dim])
            for i in model.graph.input}
    assert list(dims) == list(PACKED_INPUTS)
    assert {t for t, _ in dims.values()} == {onnx.TensorProto.INT32}
    assert dims["input_ids"][1] == dims["token_type_ids"][1] == dims["position_ids"][1] == ["tokens"]
    assert dims["token_offset"][1] == ["batch", "sequence"] and len(dims["cu_seqlens"][1]) == 1
    outputs = {o.name: (o.type.tensor_type.elem_type, [d.dim_param for d in o.type.tensor_type.shape.dim])
               for o in model.graph.output}
    assert outputs == {"last_hidden_state": (onnx.TensorProto.FLOAT, ["tokens", "hidden"]),
                       "pooler_output": (onnx.TensorProto.FLOAT, ["batch", "hidden"]),
                       "sentence_embedding": (onnx.TensorProto.FLOAT, ["batch", "hidden"])}
    # The PackedAttention weights are the fused graph's own (same names, same values).
    padded = dict(built.initializers)
    for name, array in built.packed.initializers:
        if name.endswith(("qkv.weight", "qkv.bias")):
            np.testing.assert_array_equal(array, padded[name])
    # The companion padded graph is the fused flavor's.
    fused = build_model(checkpoint, head="base", flavor="fused", precision=precision)
    assert built.op_counts() == fused.op_counts() and built.outputs == fused.outputs


@pytest.mark.parametrize(("pooling", "normalize"), POOLINGS)
def test_packed_graph_equals_padded_fused(tiny_base, tmp_path, pooling, normalize):
    checkpoint = checkpoint_with(tiny_base, pooling, normalize)
    built = build_model(checkpoint, head="base", flavor="packed")
    assert built.packed.pooled == built.pooled == PooledOutput(pooling, normalize)
    packed, padded = batchers(tiny_base, TEXTS, max_length=32, batch_tokens=24)  # several batches, one truncated
    assert len(packed) > 2 and packed.truncated == 1
    seen = 0
    for ours, want, mask in run_both(built, tmp_path, packed, padded):
        real = mask.astype(bool)
        assert ours["last_hidden_state"].shape == (int(real.sum()), checkpoint.spec.hidden_size)
        assert np.abs(ours["last_hidden_state"] - want["last_hidden_state"][real]).max() <= 1e-5
        for name in ("pooler_output", "sentence_embedding"):
            assert ours[name].shape == want[name].shape == (len(mask), checkpoint.spec.hidden_size)
            assert np.abs(ours[name] - want[name]).max() <= 1e-5
        seen += len(mask)
    assert seen == len(TEXTS)


def test_one_token_and_full_length_rows(tiny_base, tmp_path):
    """Rows of one token (a bare [CLS]) and rows at the model's full length, in one batch."""
    checkpoint = checkpoint_with(tiny_base, "mean", True)
    built = build_model(checkpoint, head="base", flavor="packed")
    full = checkpoint.spec.max_position_embeddings
    rng = np.random.default_rng(3)
    seqs = [np.array([3], np.int32), rng.integers(5, 99, full).astype(np.int32), np.array([3, 4], np.int32),
            np.array([3], np.int32), rng.integers(5, 99, full).astype(np.int32)]
    ids = np.concatenate(seqs)
    cu = np.cumsum([0, *map(len, seqs)])
    make = lambda: _native.Batcher(ids, cu, max_length=full, batch_tokens=10_000, packed=True)  # noqa: E731
    (ours, want, mask), = run_both(built, tmp_path, make(), make())
    assert mask.shape == (5, full) and mask.sum(1).tolist() == [full, full, 2, 1, 1]
    assert np.abs(ours["last_hidden_state"] - want["last_hidden_state"][mask.astype(bool)]).max() <= 1e-5
    assert np.abs(ours["sentence_embedding"] - want["sentence_embedding"]).max() <= 1e-5


def onnxruntime_part(model: onnx.ModelProto, first: int, last: int, inputs: list[onnx.ValueInfoProto],
                     outputs: list[str]) -> ort.InferenceSession:
    """onnxruntime (CPU) on nodes ``first``..``last`` of ``model``: the parts around PackedAttention."""
    graph = onnx.helper.make_graph(model.graph.node[first:last + 1], "part", inputs,
                                   [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
                                   initializer=model.graph.initializer)
    part = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    part.ir_version = model.ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the part leaves most weights unused: not worth a warning each
    return ort.InferenceSession(part.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("pooling", "normalize"), POOLINGS)
def test_onnxruntime_runs_the_ops_around_packed_attention(tiny_base, pooling, normalize):
    """onnxruntime's own kernels take the packed graph's embeddings (a [1, tokens] row with position ids,
    longer than the position table) and its pooling tail, and agree with the reference runtime there."""
    built = build_model(checkpoint_with(tiny_base, pooling, normalize), head="base", flavor="packed")
    model = built.packed.model
    names = [n.name for n in model.graph.node]
    reference = evaluator(model)
    packed, _ = batchers(tiny_base, TEXTS * 20, max_length=32, batch_tokens=10_000)
    _, *arrays = packed.packed(0)
    feeds = dict(zip(PACKED_INPUTS, arrays))
    assert len(arrays[0]) > 64  # more tokens than position embeddings: positions come from position_ids
    # embeddings: the inputs through EmbedLayerNormalization to [tokens, H]
    embeddings = onnxruntime_part(model, 0, names.index("embeddings/Squeeze"), list(model.graph.input)[:3],
                                  ["embeddings/Squeeze"])
    want = reference.run(["embeddings/Squeeze"], feeds)[0]
    got = embeddings.run(None, {k: feeds[k] for k in PACKED_INPUTS[:3]})[0]
    assert np.abs(got - want).max() <= 1e-5
    # the tail: from the last layer's output to every graph output (pooler, last_hidden_state, pooling)
    tail_start = max(i for i, node in enumerate(model.graph.node) if node.op_type == "SkipLayerNormalization")
    hidden_name = model.graph.node[tail_start].output[0]
    hidden = onnx.helper.make_tensor_value_info(hidden_name, onnx.TensorProto.FLOAT, None)
    tail = onnxruntime_part(model, tail_start + 1, len(names) - 1, [hidden, *list(model.graph.input)[3:]],
                            built.packed.outputs)
    state = reference.run([hidden_name], feeds)[0]
    got = tail.run(None, {hidden_name: state, "token_offset": feeds["token_offset"], "cu_seqlens": feeds["cu_seqlens"]})
    want = reference.run(built.packed.outputs, feeds)
    for name, a, b in zip(built.packed.outputs, got, want, strict=True):
        assert np.abs(a - b).max() <= 1e-5, name


def test_minilm_packed_equals_padded(minilm_dir, tmp_path):
    """The real all-MiniLM-L6-v2 (mean pooling, normalised, as its sentence-transformers config says)."""
    checkpoint = checkpoint_with(minilm_dir)
    built = build_model(checkpoint, head="base", flavor="packed")
    assert built.packed.pooled == PooledOutput("mean", True)
    texts = ["The quick brown fox jumps over the lazy dog.", "Ceci n'est pas une pipe; ça, c'est un modèle.",
             "東京は日本の首都です。", "", "tokenization of unbelievably antidisestablishmentarianistic words " * 3]
    packed, padded = batchers(minilm_dir, texts, max_length=128, batch_tokens=4096)
    assert len(packed) == 1
    (ours, want, mask), = run_both(built, tmp_path, packed, padded)
    assert np.abs(ours["last_hidden_state"] - want["last_hidden_state"][mask.astype(bool)]).max() <= 2e-5
    assert np.abs(ours["sentence_embedding"] - want["sentence_embedding"]).max() <= 1e-5


def test_electra_packed_projects_embeddings(tmp_path):
    """ELECTRA (embedding width 20 != hidden 36): the family's embeddings_project runs on the packed tokens."""
    transformers = pytest.importorskip("transformers")
    config = {k: v for k, v in TINY_CONFIG.items() if k not in ("hidden_dropout_prob", "attention_probs_dropout_prob")}
    model = transformers.ElectraModel(transformers.ElectraConfig(**config, embedding_size=20)).eval()
    scale_random_weights(model)
    source = tmp_path / "electra"
    model.save_pretrained(source)
    (source / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    built = build_model(checkpoint_with(source), head="base", flavor="packed")
    assert any(n.name.startswith("embeddings_project") for n in built.packed.skeleton.graph.node)
    packed, padded = batchers(source, TEXTS, max_length=32, batch_tokens=64)
    for ours, want, mask in run_both(built, tmp_path, packed, padded):
        assert np.abs(ours["last_hidden_state"] - want["last_hidden_state"][mask.astype(bool)]).max() <= 1e-5
        assert np.abs(ours["sentence_embedding"] - want["sentence_embedding"]).max() <= 1e-5


@pytest.mark.parametrize(("head", "precision", "message"), [
    ("qa", "fp32", "head 'qa' has no packed form: use --head base"),
    ("base", "int8", "--flavor packed runs on CUDA, where int8 graphs do not"),
])
def test_packed_flavor_refusals(tiny_checkpoint, head, precision, message):
    path = tiny_checkpoint(head="qa" if head == "qa" else "base")
    with pytest.raises(ExportError, match=message):
        build_model(checkpoint_with(path), head=head, flavor="packed", precision=precision)
    proc = run_mbexport("convert", str(path), "--out", str(path.parent / "out"), "--head", head,
                        "--precision", precision, "--flavor", "packed", "--no-parity")
    assert proc.returncode != 0 and message in proc.stderr.decode()
    assert not (path.parent / "out").exists()
