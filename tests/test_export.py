"""Graph building: op counts per flavor, and parity of every head, flavor and precision vs transformers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import TINY_CONFIG

from mbexport.catalog import Source
from mbexport.converter import convert_detailed
from mbexport.errors import ExportError
from mbexport.export.build import build_model
from mbexport.heads import HEADS
from mbexport.parity import HISTOGRAM_DECADES, check_parity, numpy_reference, random_batch, torch_reference
from mbexport.sources import load_checkpoint
from mbexport.spec import sha256_files

pytest.importorskip("torch")


def load(path: Path):
    return load_checkpoint(Source(label=path.name, path=path))


def save(model: onnx.ModelProto, tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_fused_graph_has_one_fused_op_per_part(tiny_checkpoint):
    checkpoint = load(tiny_checkpoint(head="pretraining"))
    built = build_model(checkpoint, head="base", flavor="fused")
    onnx.checker.check_model(built.model)
    counts = Counter(node.op_type for node in built.model.graph.node)
    layers = checkpoint.spec.num_layers
    assert counts["EmbedLayerNormalization"] == 1
    assert counts["Attention"] == layers
    assert counts["SkipLayerNormalization"] == 2 * layers
    assert counts["BiasGelu"] == layers
    assert counts["Softmax"] == 0 and counts["LayerNormalization"] == 0


def test_portable_graph_uses_standard_ops_only(tiny_checkpoint):
    built = build_model(load(tiny_checkpoint(head="pretraining")), head="pretraining", flavor="portable")
    onnx.checker.check_model(built.model)
    assert {node.domain for node in built.model.graph.node} == {""}


def test_names_follow_checkpoint_parameters(tiny_checkpoint):
    built = build_model(load(tiny_checkpoint(head="base")), head="base")
    names = {init.name for init in built.model.graph.initializer}
    assert "encoder.layer.1.attention.self.qkv.weight" in names
    assert "encoder.layer.0.intermediate.dense.weight.T" in names
    assert [o.name for o in built.model.graph.output] == ["last_hidden_state", "pooler_output", "sentence_embedding"]


@pytest.mark.parametrize("flavor", ["fused", "portable"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("head", ["base", "pretraining", "qa", "classification"])
def test_every_head_matches_transformers(tiny_checkpoint, tmp_path, head, flavor, precision):
    checkpoint = load(tiny_checkpoint(head=head, fmt="safetensors", seed=3))
    built = build_model(checkpoint, head=head, flavor=flavor, precision=precision)
    assert built.outputs == [*HEADS[head].outputs, *(["sentence_embedding"] if head == "base" else [])]
    report = check_parity(save(built.model, tmp_path), checkpoint, built.head, precision, reference="torch")
    assert report.reference.startswith("torch")
    assert report.passed, report.to_dict()
    for output in report.outputs:
        assert output.max_abs <= output.tolerance
        if output.name in ("last_hidden_state", "pooler_output"):
            assert output.tolerance == (1e-4 if precision == "fp32" else 2e-2)
        assert output.mean_cosine >= (0.99999 if precision == "fp32" else 0.9999)
        if output.argmax_agreement is not None:
            assert output.argmax_agreement == 1.0
        # The |diff| histogram's highest bin holds the max; fp32 hidden states have nothing at or above 1e-4.
        hist = output.abs_diff_histogram
        assert len(hist) == len(HISTOGRAM_DECADES) + 1 and sum(hist) > 0
        assert 10.0 ** HISTOGRAM_DECADES[max(i for i, c in enumerate(hist) if c) - 1] <= output.max_abs
        if precision == "fp32" and output.name == "last_hidden_state":
            assert sum(hist[HISTOGRAM_DECADES.index(-4) + 1:]) == 0


@pytest.mark.parametrize("act", ["gelu_new", "relu"])
@pytest.mark.parametrize("flavor", ["fused", "portable"])
def test_other_activations_match_transformers(tiny_checkpoint, tmp_path, act, flavor):

    checkpoint = load(tiny_checkpoint(head="base", config={**TINY_CONFIG, "hidden_act": act}))
    built = build_model(checkpoint, head="base", flavor=flavor)
    report = check_parity(save(built.model, tmp_path), checkpoint, built.head, "fp32", reference="torch")
    assert report.passed, report.to_dict()


def test_numpy_reference_equals_torch_reference(tiny_checkpoint):
    """The torch-free fallback reference is an independent forward that agrees with transformers."""
    checkpoint = load(tiny_checkpoint(head="pretraining"))
    batches = [random_batch(checkpoint.spec, seed=5)]
    head = HEADS["pretraining"]
    ours = numpy_reference(checkpoint, head, batches)[0]
    theirs = torch_reference(checkpoint, head, batches)[0]
    mask = batches[0]["attention_mask"].astype(bool)
    assert np.abs(ours["prediction_logits"] - theirs["prediction_logits"])[mask].max() < 1e-5
    assert np.abs(ours["seq_relationship_logits"] - theirs["seq_relationship_logits"]).max() < 1e-5


def test_fp16_weight_out_of_range_is_refused(tiny_checkpoint):
    checkpoint = load(tiny_checkpoint(head="base"))
    checkpoint.weights["embeddings.word_embeddings.weight"] = checkpoint.weights["embeddings.word_embeddings.weight"] * 1e6
    with pytest.raises(ExportError, match="beyond float16's range.*--precision fp32"):
        build_model(checkpoint, head="base", precision="fp16")


def test_fp16_activation_overflow_fails_parity(tiny_checkpoint, tmp_path):
    """Weights within fp16 range whose activations overflow it: parity must catch it, not pass NaNs."""
    checkpoint = load(tiny_checkpoint(head="base"))
    for name in ("encoder.layer.0.intermediate.dense.weight", "encoder.layer.0.output.dense.weight"):
        checkpoint.weights[name] = checkpoint.weights[name] * 1000
    built = build_model(checkpoint, head="base", precision="fp16")
    report = check_parity(save(built.model, tmp_path), checkpoint, built.head, "fp16", reference="torch")
    assert not report.passed
    assert check_parity(save(build_model(checkpoint, head="base").model, tmp_path), checkpoint, built.head, "fp32",
                        reference="torch").passed


def test_auto_head_prefers_the_checkpoint_head(tiny_checkpoint):
    assert build_model(load(tiny_checkpoint(head="qa")), head="auto").head.name == "qa"
    assert build_model(load(tiny_checkpoint(head="pretraining")), head="auto").head.name == "pretraining"
    assert build_model(load(tiny_checkpoint(head="base")), head="auto").head.name == "base"


def test_missing_head_is_a_clear_error(tiny_checkpoint):
    with pytest.raises(ExportError, match="has no qa head.*--head"):
        build_model(load(tiny_checkpoint(head="base")), head="qa")
    with pytest.raises(ExportError, match="unknown flavor"):
        build_model(load(tiny_checkpoint(head="base")), flavor="turbo")


def test_minilm_real_weights_match_transformers(minilm_dir, tmp_path):
    """Real all-MiniLM-L6-v2 weights: fused fp32 export within 1e-4 on random ids and real text."""
    checkpoint = load(minilm_dir)
    built = build_model(checkpoint, head="base", flavor="fused")
    report = check_parity(save(built.model, tmp_path), checkpoint, built.head, "fp32", reference="torch")
    hidden = next(o for o in report.outputs if o.name == "last_hidden_state")
    assert hidden.max_abs <= 1e-4 and report.passed, report.to_dict()


def test_untied_decoder_is_used(tiny_checkpoint, tmp_path):
    """A checkpoint whose MLM decoder differs from the word embeddings exports its own decoder."""
    checkpoint = load(tiny_checkpoint(head="pretraining"))
    embeddings = checkpoint.weights["embeddings.word_embeddings.weight"]
    checkpoint.weights["cls.predictions.decoder.weight"] = embeddings[::-1].copy()
    built = build_model(checkpoint, head="pretraining")
    assert "cls.predictions.decoder.weight" in {i.name for i in built.model.graph.initializer}
    for reference in ("torch", "numpy"):
        report = check_parity(save(built.model, tmp_path), checkpoint, built.head, "fp32", reference=reference)
        assert report.passed, report.to_dict()


def test_streamed_model_file_equals_the_in_memory_model(tiny_checkpoint, tmp_path):
    """writer.write_model streams weights by hand; the file must parse to exactly the built model."""
    from mbexport.export.writer import write_model

    built = build_model(load(tiny_checkpoint(head="pretraining")), head="pretraining", precision="fp16")
    digests = write_model(built, tmp_path)
    written = onnx.load(str(tmp_path / "model.onnx"))
    assert written == built.model
    import hashlib

    assert digests == {tmp_path / "model.onnx": hashlib.sha256((tmp_path / "model.onnx").read_bytes()).hexdigest()}


@pytest.mark.parametrize("flavor", ["fused", "portable"])
@pytest.mark.parametrize("head", ["base", "pretraining", "qa", "classification"])
def test_int8_quantizes_matmuls_and_passes_cosine_parity(tiny_checkpoint, tmp_path, head, flavor):
    result = convert_detailed(str(tiny_checkpoint(head=head, fmt="safetensors", seed=3)), out=tmp_path / "int8",
                              head=head, flavor=flavor, precision="int8", reference="torch")
    manifest = json.loads((result.path / "mbexport.json").read_text())
    assert manifest["precision"] == "int8" and manifest["quantization"]["weight_type"] == "QUInt8"
    assert result.op_counts.get("MatMulInteger", 0) >= 2 * TINY_CONFIG["num_hidden_layers"]
    assert result.parity is not None and result.parity.passed
    for output in result.parity.outputs:
        assert output.tolerance is None and output.mean_cosine >= 0.98
    assert manifest["files"]["model.onnx"]["sha256"] == sha256_files([result.path / "model.onnx"])
