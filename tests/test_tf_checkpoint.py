"""TensorFlow checkpoints read without TensorFlow: format, name mapping, parity, bad input.

The fixtures under tests/fixtures/tf/ were written by real TensorFlow (tensorflow-cpu 2.21,
tests/fixtures/make_tf_checkpoints.py). Their values come from that script's seeded numpy
functions, so the expected arrays are rebuilt here bit for bit, and mapped onto
transformers' names by a table of our own, independent of the reader's. Corrupt inputs are
made by damaging copies of the fixtures; checkpoints TensorFlow cannot be asked for in CI
come from tests/fixtures/tf/bundle_writer.py, which reproduces TF's .index files exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import load_fixture_module

from mbexport.errors import CheckpointFormatError, ShapeError, SourceNotFoundError
from mbexport.sources import crc, tf_bundle
from mbexport.sources.tf_bundle import BundleReader, crc32c, mask_crc, unmask_crc
from mbexport.sources.tf_checkpoint import (
    find_prefix,
    inspect_ckpt_table,
    is_tf_checkpoint,
    list_tensors,
    load_tf_checkpoint,
)

FIXTURES = Path(__file__).parent / "fixtures"
TF = FIXTURES / "tf"


maker = load_fixture_module(FIXTURES / "make_tf_checkpoints.py", "_mbexport_make_tf_checkpoints")
writer = load_fixture_module(TF / "bundle_writer.py", "_mbexport_tf_bundle_writer")
CONFIG = json.loads((TF / "pretraining" / "bert_config.json").read_text())


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(TF / name, tmp_path / name))


# ---------------------------------------------------------------------------------------------
# The expected canonical arrays, from TF names by an explicit table (kernels [in, out] -> .T).

def _tf1_to_hf(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    leaf = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
    fixed = {
        "cls/predictions/output_bias": "cls.predictions.bias",
        "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
        "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
        "cls/squad/output_weights": "qa_outputs.weight",
        "cls/squad/output_bias": "qa_outputs.bias",
    }
    for name, value in values.items():
        if name in fixed:
            out[fixed[name]] = value
            continue
        parts = name.split("/")
        if parts[0] == "bert":
            parts = parts[1:]
        if parts[0] == "encoder":
            parts = ["encoder", "layer", parts[1].removeprefix("layer_"), *parts[2:]]
        if parts[-1] in leaf:
            parts[-1] = leaf[parts[-1]]
        elif parts[-1].endswith("_embeddings"):
            parts.append("weight")
        out[".".join(parts)] = value.T if name.endswith("kernel") else value
    return out


def _tf2_to_hf(values: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    block = {"_attention_layer/_query_dense": "attention.self.query", "_attention_layer/_key_dense":
             "attention.self.key", "_attention_layer/_value_dense": "attention.self.value",
             "_attention_layer/_output_dense": "attention.output.dense", "_attention_layer_norm":
             "attention.output.LayerNorm", "_intermediate_dense": "intermediate.dense", "_output_dense":
             "output.dense", "_output_layer_norm": "output.LayerNorm"}
    leaf = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
    out = {}
    for name, value in values.items():
        index = int(name.split("/")[0].split("-")[1])
        rest = name.split("/", 1)[1]
        if index < 3:
            key = ["embeddings.word_embeddings", "embeddings.position_embeddings",
                   "embeddings.token_type_embeddings"][index] + ".weight"
        elif index == 3:
            key = f"embeddings.LayerNorm.{leaf[rest]}"
        elif index == 4 + layers:
            key = f"pooler.dense.{leaf[rest]}"
        else:
            module, last = rest.rsplit("/", 1)
            key = f"encoder.layer.{index - 4}.{block[module]}.{leaf[last]}"
        if rest.endswith("kernel"):
            value = value.reshape(h, -1) if "_query" in rest or "_key" in rest or "_value" in rest else \
                value.reshape(-1, value.shape[-1])
            value = value.T
        elif rest.endswith("bias"):
            value = value.reshape(-1)
        out[key] = value
    return out


EXPECTED = {
    "pretraining": lambda: _tf1_to_hf(maker.tf1_variables(CONFIG, seed=0)),
    "mixed": lambda: _tf1_to_hf(maker.mixed_values(CONFIG)),
    "sharded": lambda: _tf1_to_hf(maker.tf1_variables(CONFIG, seed=3)),
    "squad": lambda: _tf1_to_hf(maker.tf1_variables(CONFIG, heads=("qa",), seed=4)),
    "tf2_encoder": lambda: _tf2_to_hf(maker.tf2_variables(CONFIG, seed=1), CONFIG),
}
HEADS = {"pretraining": ("base", "pretraining"), "mixed": ("base", "pretraining"),
         "sharded": ("base", "pretraining"), "squad": ("base", "qa"), "tf2_encoder": ("base",)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_weights_equal_tf_values(name: str) -> None:
    checkpoint = load_tf_checkpoint(TF / name, name)
    expected = EXPECTED[name]()
    assert sorted(checkpoint.weights) == sorted(expected)
    for key, value in expected.items():
        actual = checkpoint.weights[key]
        assert actual.dtype == np.float32 and (actual.flags.c_contiguous or actual.T.flags.c_contiguous), key
        np.testing.assert_array_equal(actual, value, err_msg=key)
    assert checkpoint.spec.heads == HEADS[name]
    assert checkpoint.spec.hidden_size == 36 and checkpoint.spec.num_layers == 2
    assert checkpoint.vocab_file == TF / name / "vocab.txt"
    assert len(checkpoint.weights_sha256) == 64


def test_prefix_directory_and_index_file_are_the_same_checkpoint() -> None:
    prefix = TF / "squad" / "bert_model.ckpt"
    assert find_prefix(TF / "squad") == prefix
    assert find_prefix(prefix) == prefix
    assert find_prefix(Path(f"{prefix}.index")) == prefix
    a, b = load_tf_checkpoint(prefix, "a"), load_tf_checkpoint(TF / "squad", "b")
    assert a.weights_sha256 == b.weights_sha256


def test_is_tf_checkpoint(tmp_path: Path) -> None:
    assert is_tf_checkpoint(TF / "pretraining")
    assert is_tf_checkpoint(TF / "pretraining" / "bert_model.ckpt")
    assert not is_tf_checkpoint(tmp_path)
    assert not is_tf_checkpoint(tmp_path / "bert_model.ckpt")


def test_directory_with_several_checkpoints(tmp_path: Path) -> None:
    d = _copy("squad", tmp_path)
    for suffix in (".index", ".data-00000-of-00001"):
        (d / "bert_model.ckpt").with_name(f"model.ckpt-100{suffix}").write_bytes(
            (d / f"bert_model.ckpt{suffix}").read_bytes())
        (d / f"model.ckpt-200{suffix}").write_bytes((d / f"bert_model.ckpt{suffix}").read_bytes())
        (d / f"bert_model.ckpt{suffix}").unlink()
    with pytest.raises(CheckpointFormatError, match="several checkpoints.*give the prefix"):
        find_prefix(d)
    (d / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-200"\n')
    assert find_prefix(d) == d / "model.ckpt-200"


def test_optimizer_slots_and_global_step_are_listed_but_skipped() -> None:
    listed = {name: (dtype, shape) for name, dtype, shape in list_tensors(TF / "pretraining")}
    assert listed["global_step"] == ("int64", ())
    assert listed["bert/embeddings/word_embeddings/adam_m"] == ("float32", (99, 36))
    assert listed["bert/encoder/layer_1/attention/self/query/kernel/adam_v"] == ("float32", (36, 36))
    assert len(listed) == 3 * 46 + 1
    assert len(load_tf_checkpoint(TF / "pretraining", "x").weights) == 46


def test_inspect_rows_like_tf_inspect_checkpoint() -> None:
    rows = inspect_ckpt_table(TF / "mixed")
    assert rows == sorted(rows)
    table = {name: (dtype, shape) for name, dtype, shape in rows}
    assert table["bert/embeddings/word_embeddings"] == ("bfloat16", "[99, 36]")
    assert table["bert/encoder/layer_0/intermediate/dense/kernel"] == ("float16", "[36, 52]")
    assert table["bert/encoder/layer_1/intermediate/dense/kernel"] == ("float32", "[36, 52]")
    assert table["global_step"] == ("int32", "[]")
    assert inspect_ckpt_table(TF / "tf2_encoder")[0] == ("_CHECKPOINTABLE_OBJECT_GRAPH", "string", "[]")


def test_reader_dtypes_and_scalars() -> None:
    with BundleReader(TF / "mixed" / "bert_model.ckpt") as reader:
        assert reader.read("global_step").dtype == np.int32 and int(reader.read("global_step")) == 1234
        words = reader.read("bert/embeddings/word_embeddings")
        assert words.dtype == np.float32
        np.testing.assert_array_equal(words, maker.mixed_values(CONFIG)["bert/embeddings/word_embeddings"])
        half = reader.read("bert/encoder/layer_0/output/dense/bias")
        assert half.dtype == np.float16
    with BundleReader(TF / "pretraining" / "bert_model.ckpt") as reader:
        step = reader.read("global_step")
        assert step.dtype == np.int64 and step.shape == () and int(step) == 1234
    with BundleReader(TF / "tf2_encoder" / "bert_model.ckpt") as reader:
        graph = reader.read("_CHECKPOINTABLE_OBJECT_GRAPH")
        assert graph.shape == () and b"layer_with_weights-0" in graph.item()


def test_sharded_checkpoint_spans_several_files() -> None:
    with BundleReader(TF / "sharded" / "bert_model.ckpt") as reader:
        assert reader.num_shards == 4
        used = {e.shard_id for e in reader.entries.values()}
        assert len(used) >= 3
        assert all(p.is_file() for p in reader.shard_paths())


# ---------------------------------------------------------------------------------------------
# CRC32C and the test writer


def _crc_bytewise(data: bytes) -> int:
    register = 0xFFFFFFFF
    for byte in data:
        register = crc._TABLE_LIST[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ 0xFFFFFFFF


@pytest.mark.parametrize("size", [0, 1, 7, 127, 128, 1000, 4099, 65536 + 3, 300_001])
def test_crc32c_numpy_matches_bytewise(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    expected = _crc_bytewise(data)
    assert crc._crc32c_numpy(data) == expected
    assert crc._crc32c_numpy(data[size // 3:], crc._crc32c_numpy(data[: size // 3])) == expected
    assert crc32c(data) == expected  # the fast package when installed


def test_crc32c_known_values() -> None:
    assert crc._crc32c_numpy(b"123456789") == 0xE3069283
    assert crc._crc32c_numpy(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vectors
    assert crc._crc32c_numpy(bytes([0xFF] * 32)) == 0x62A8AB43
    for value in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert unmask_crc(mask_crc(value)) == value


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_writer_reproduces_tensorflow_index_bytes(name: str, tmp_path: Path) -> None:
    with BundleReader(TF / name / "bert_model.ckpt") as reader:
        entries = [writer.Entry(e.name, e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c)
                   for e in reader.entries.values()]
        writer.write_index(tmp_path / "x.index", entries, reader.num_shards)
        assert (tmp_path / "x.index").read_bytes() == reader.index_path.read_bytes()


def test_writer_multi_block_index_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {f"bert/encoder/layer_{i}/t_{j}": rng.standard_normal((3, j + 1)).astype(np.float32)
               for i in range(12) for j in range(20)}
    tensors["half"] = np.arange(6, dtype=np.float16).reshape(2, 3)
    tensors["step"] = np.array(7, dtype=np.int64)
    writer.write_bundle(tmp_path / "m.ckpt", tensors, num_shards=2, shard_of=lambda n: len(n) % 2, block_size=512)
    with BundleReader(tmp_path / "m.ckpt") as reader:
        assert sorted(reader.entries) == sorted(tensors)
        for key, value in tensors.items():
            np.testing.assert_array_equal(reader.read(key), value)
    table = tf_bundle._read_table(tmp_path / "m.ckpt.index", (tmp_path / "m.ckpt.index").read_bytes())
    assert len(table) == len(tensors) + 1


# ---------------------------------------------------------------------------------------------
# Parity: transformers' BertForPreTraining holding TF's values vs our arrays and the ONNX export.


def _torch_model(name: str):  # noqa: ANN202
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    expected = EXPECTED[name]()
    head = HEADS[name][-1]
    cls = {"pretraining": transformers.BertForPreTraining, "qa": transformers.BertForQuestionAnswering,
           "base": transformers.BertModel}[head]
    model = cls(transformers.BertConfig(**CONFIG)).eval()
    prefix = "" if head == "base" else "bert."
    state = {(prefix + k if k.startswith(("embeddings.", "encoder.", "pooler.")) else k): torch.from_numpy(v.copy())
             for k, v in expected.items()}
    if head == "pretraining":
        state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    if head == "qa":
        state = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if not k.endswith("position_ids")]
    model.set_attn_implementation("eager")
    return model, prefix


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transformers_model_holds_our_arrays(name: str) -> None:
    model, prefix = _torch_model(name)
    checkpoint = load_tf_checkpoint(TF / name, name)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    for key, value in checkpoint.weights.items():
        full = prefix + key if key.startswith(("embeddings.", "encoder.", "pooler.")) else key
        if full not in state:
            assert name == "squad" and key.startswith("pooler.")  # BertForQuestionAnswering has no pooler
            continue
        np.testing.assert_array_equal(value, state[full], err_msg=key)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_onnx_export_matches_transformers(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    from mbexport.export.build import build_model
    from mbexport.parity import random_batch

    checkpoint = load_tf_checkpoint(TF / name, name)
    model, _ = _torch_model(name)
    feeds = random_batch(checkpoint.spec, seed=1)
    real = feeds["attention_mask"].astype(bool)
    with torch.no_grad():
        result = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}, output_hidden_states=True)
    for head in HEADS[name]:
        built = build_model(checkpoint, head=head, flavor="portable")
        session = ort.InferenceSession(built.model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs = dict(zip(built.outputs, session.run(built.outputs, feeds), strict=True))
        if head == "base":
            reference = {"last_hidden_state": result.hidden_states[-1] if name != "tf2_encoder"
                         else result.last_hidden_state}
        else:
            reference = {k: getattr(result, k) for k in outputs}
        for key, ref in reference.items():
            ref = ref.numpy()
            ours = outputs[key]
            if ref.ndim >= 2 and ref.shape[:2] == real.shape:
                ref, ours = ref[real], ours[real]
            scale = max(1.0, float(np.abs(ref).max()))
            assert np.abs(ours - ref).max() <= 1e-4 * scale, (head, key, np.abs(ours - ref).max())


@pytest.mark.torch
def test_convert_tf_directory_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mbexport.converter import convert_detailed

    result = convert_detailed(str(TF / "pretraining"), out=tmp_path / "out", head="pretraining", flavor="fused")
    assert result.parity is not None and result.parity.passed
    assert (tmp_path / "out" / "model.onnx").is_file()


# ---------------------------------------------------------------------------------------------
# Bad input: one-line errors naming the file and the tensor.


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_wrong_magic(tmp_path: Path) -> None:
    d = _copy("pretraining", tmp_path)
    index = d / "bert_model.ckpt.index"
    data = bytearray(index.read_bytes())
    data[-1] ^= 0x01
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match="wrong magic") as error:
        load_tf_checkpoint(d, "x")
    assert str(index) in _one_line(error)


def test_not_a_checkpoint_index(tmp_path: Path) -> None:
    d = _copy("squad", tmp_path)
    (d / "bert_model.ckpt.index").write_bytes(b"short")
    with pytest.raises(CheckpointFormatError, match="shorter than the 48-byte footer"):
        load_tf_checkpoint(d, "x")


def test_crc_mismatch_in_index(tmp_path: Path) -> None:
    d = _copy("pretraining", tmp_path)
    index = d / "bert_model.ckpt.index"
    data = bytearray(index.read_bytes())
    position = data.index(b"word_embeddings") + 2  # inside a key of the data block
    data[position] ^= 0x20
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match="CRC mismatch in data block") as error:
        load_tf_checkpoint(d, "x")
    assert str(index) in _one_line(error)


def test_crc_mismatch_in_data(tmp_path: Path) -> None:
    d = _copy("pretraining", tmp_path)
    tensor = "bert/encoder/layer_1/attention/self/key/kernel"
    with BundleReader(d / "bert_model.ckpt") as reader:
        entry = reader.entries[tensor]
        shard = reader.shard_path(entry.shard_id)
    data = bytearray(shard.read_bytes())
    data[entry.offset + entry.size // 2] ^= 0x04
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match="CRC mismatch in tensor") as error:
        load_tf_checkpoint(d, "x")
    message = _one_line(error)
    assert str(shard) in message and repr(tensor) in message


def test_truncated_data_shard(tmp_path: Path) -> None:
    d = _copy("squad", tmp_path)
    shard = d / "bert_model.ckpt.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="is truncated: tensor 'bert/") as error:
        load_tf_checkpoint(d, "x")
    assert str(shard) in _one_line(error)


def test_missing_shard(tmp_path: Path) -> None:
    d = _copy("sharded", tmp_path)
    shard = d / "bert_model.ckpt.data-00002-of-00004"
    shard.unlink()
    with pytest.raises(CheckpointFormatError, match="is missing \\(it holds tensor 'bert/") as error:
        load_tf_checkpoint(d, "x")
    assert str(shard) in _one_line(error)


@pytest.mark.parametrize("missing", ["bert_config.json", "vocab.txt"])
def test_missing_config_or_vocab(tmp_path: Path, missing: str) -> None:
    d = _copy("squad", tmp_path)
    (d / missing).unlink()
    with pytest.raises(CheckpointFormatError, match=f"{missing} is missing") as error:
        load_tf_checkpoint(d, "x")
    assert str(d / missing) in _one_line(error)


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError):
        load_tf_checkpoint(tmp_path / "nothing" / "bert_model.ckpt", "x")


def test_shape_disagrees_with_config(tmp_path: Path) -> None:
    d = _copy("pretraining", tmp_path)
    config = json.loads((d / "bert_config.json").read_text())
    config["intermediate_size"] = 64
    (d / "bert_config.json").write_text(json.dumps(config))
    with pytest.raises(ShapeError, match="intermediate/dense/.*bert_config.json implies") as error:
        load_tf_checkpoint(d, "x")
    assert str(d / "bert_model.ckpt.index") in _one_line(error)


def test_more_layers_in_config_than_in_checkpoint(tmp_path: Path) -> None:
    d = _copy("squad", tmp_path)
    config = json.loads((d / "bert_config.json").read_text())
    config["num_hidden_layers"] = 3
    (d / "bert_config.json").write_text(json.dumps(config))
    with pytest.raises(ShapeError, match="encoder.layer.2.*is missing"):
        load_tf_checkpoint(d, "x")


def _write_variant(tmp_path: Path, edit, fixture: str = "squad") -> Path:  # noqa: ANN001
    """A fixture's tensors rewritten by the test writer after ``edit(tensors)``."""
    d = _copy(fixture, tmp_path)
    with BundleReader(d / "bert_model.ckpt") as reader:
        tensors = {name: reader.read(name) for name in reader.entries if reader.entries[name].dtype != 7}
    for p in d.glob("bert_model.ckpt.*"):
        p.unlink()
    edit(tensors)
    writer.write_bundle(d / "bert_model.ckpt", tensors)
    return d


def test_unknown_variable_layout(tmp_path: Path) -> None:
    d = _write_variant(tmp_path, lambda t: t.update({"bert/encoder/layer_0/adapter/dense/kernel":
                                                     np.zeros((36, 8), np.float32)}))
    with pytest.raises(CheckpointFormatError, match="tensor 'bert/encoder/layer_0/adapter/dense/kernel'.*not part"
                       ) as error:
        load_tf_checkpoint(d, "x")
    assert str(d / "bert_model.ckpt.index") in _one_line(error)


def test_integer_weight_is_refused(tmp_path: Path) -> None:
    d = _write_variant(tmp_path, lambda t: t.update({"bert/pooler/dense/bias": np.zeros(36, np.int32)}))
    with pytest.raises(CheckpointFormatError, match="'bert/pooler/dense/bias' has dtype int32"):
        load_tf_checkpoint(d, "x")


def test_float64_weight_is_narrowed(tmp_path: Path) -> None:
    d = _write_variant(tmp_path, lambda t: t.update({"bert/pooler/dense/bias": np.full(36, 0.5, np.float64)}))
    bias = load_tf_checkpoint(d, "x").weights["pooler.dense.bias"]
    assert bias.dtype == np.float32 and (bias == 0.5).all()


def test_extra_optimizer_names_are_skipped(tmp_path: Path) -> None:
    def edit(tensors: dict) -> None:
        tensors["bert/pooler/dense/kernel/Adam"] = np.zeros((36, 36), np.float32)
        tensors["beta1_power"] = np.zeros((), np.float32)

    d = _write_variant(tmp_path, edit)
    assert len(load_tf_checkpoint(d, "x").weights) == 41


def test_classifier_fine_tune_maps_to_classification_head(tmp_path: Path) -> None:
    def edit(tensors: dict) -> None:
        del tensors["cls/squad/output_weights"], tensors["cls/squad/output_bias"]
        tensors["output_weights"] = np.ones((3, 36), np.float32)
        tensors["output_bias"] = np.arange(3, dtype=np.float32)

    checkpoint = load_tf_checkpoint(_write_variant(tmp_path, edit), "x")
    assert checkpoint.spec.heads == ("base", "classification") and checkpoint.spec.num_labels == 3
    np.testing.assert_array_equal(checkpoint.weights["classifier.bias"], [0, 1, 2])


def test_tf2_optimizer_slots_and_counters_are_skipped(tmp_path: Path) -> None:
    slot = "encoder/layer_with_weights-0/embeddings/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"

    def edit(tensors: dict) -> None:
        tensors[slot] = np.zeros((99, 36), np.float32)
        tensors["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"] = np.array(5, np.int64)
        tensors["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] = np.array(1, np.int64)

    checkpoint = load_tf_checkpoint(_write_variant(tmp_path, edit, "tf2_encoder"), "x")
    assert sorted(checkpoint.weights) == sorted(EXPECTED["tf2_encoder"]())


def test_tf2_attribute_names_map_like_layer_numbers(tmp_path: Path) -> None:
    """BertEncoderV2 also tracks its layers as attributes (_embedding_layer, _transformer_layers/N, ...)."""
    renames = {"layer_with_weights-0/": "_embedding_layer/", "layer_with_weights-1/": "_position_embedding_layer/",
               "layer_with_weights-2/": "_type_embedding_layer/", "layer_with_weights-3/": "_embedding_norm_layer/",
               "layer_with_weights-4/": "_transformer_layers/0/", "layer_with_weights-5/": "_transformer_layers/1/",
               "layer_with_weights-6/": "_pooler_layer/"}

    def edit(tensors: dict) -> None:
        for name in list(tensors):
            for old, new in renames.items():
                if name.startswith("encoder/" + old):
                    tensors["model/" + new + name[len("encoder/" + old):]] = tensors.pop(name)

    checkpoint = load_tf_checkpoint(_write_variant(tmp_path, edit, "tf2_encoder"), "x")
    for key, value in EXPECTED["tf2_encoder"]().items():
        np.testing.assert_array_equal(checkpoint.weights[key], value, err_msg=key)
