"""Hostile checkpoints: every source refuses them with one line, never crashes, never lies.

Issue 9, classes 2-5 and 7: a pickle that poisons the unpickler for later loads; configs
and weights that describe different models (and still passed parity); NaN/Inf weights and
outputs; small files that ask for gigabytes; shard indexes that point outside the
checkpoint. Hostile files are written here byte by byte (pickle opcodes, zip members,
safetensors headers, TF indexes through the test bundle writer); the legitimate ones by
torch/transformers themselves. Memory bombs run in a subprocess under an address-space cap
(RLIMIT_AS), so the old behaviour shows as a MemoryError instead of taking the machine.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import TINY_CONFIG, assert_one_line_error, load_fixture_module, run_mbexport, tiny_vocab
from safetensors.numpy import save_file

from mbexport.errors import CheckpointFormatError, SourceNotFoundError, UnsafeCheckpointError
from mbexport.jsonfiles import MAX_FILE_BYTES
from mbexport.parity import ParityReport, compare
from mbexport.sources.hf_dir import load_hf_dir, load_safetensors
from mbexport.sources.tf_bundle import MAX_INDEX_BYTES, BundleReader
from mbexport.sources.tf_checkpoint import find_prefix, load_tf_checkpoint
from mbexport.sources.torch_pickle import load_torch_bin
from mbexport.spec import MAX_LAYERS, UNSUPPORTED_OPTIONS, BertSpec

TF = Path(__file__).parent / "fixtures" / "tf"
MEMORY_CAP = 1536 << 20  # bytes of address space a bomb test's subprocess may use


writer = load_fixture_module(TF / "bundle_writer.py", "_mbexport_tf_bundle_writer")


# ---------------------------------------------------------------------------------------------
# Writers for hostile files


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    data = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(key: str, numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
            legacy: bool = False) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``
    as torch.save pickles it, the storage a persistent id (a 6-tuple in the legacy format)."""
    pid = [_str("storage"), _global("torch", "FloatStorage"), _str(key), _str("cpu"), _int(numel)]
    storage = _tuple(*pid, *([b"N"] if legacy else [])) + b"Q"
    args = _tuple(storage, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89",
                  _global("collections", "OrderedDict") + b")R")
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state_pickle(tensors: dict[str, bytes]) -> bytes:
    """A protocol-2 pickle of an OrderedDict state dict holding the given tensor pickles."""
    items = b"".join(_str(name) + tensor for name, tensor in tensors.items())
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + items + b"u."


def _zip_bin(path: Path, data_pkl: bytes, storages: dict[str, bytes], *, deflate: tuple[str, ...] = (),
             padding: dict[str, int] | None = None) -> Path:
    """A torch.save-style zip. Members named in ``deflate`` (``data.pkl``, ``data/0``) are
    compressed; ``padding`` appends that many zero bytes to a member, streamed in 1 MiB chunks."""
    members = {"data.pkl": data_pkl, "byteorder": b"little", **{f"data/{k}": v for k, v in storages.items()}}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(f"archive/{name}")
            info.compress_type = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            with archive.open(info, "w", force_zip64=True) as member:
                member.write(data)
                for _ in range((padding or {}).get(name, 0) >> 20):
                    member.write(bytes(1 << 20))
    return path


def _poisoned(real_bin: Path, out: Path, target: str) -> Path:
    """``real_bin`` with ``GLOBAL target; {"bfloat16": True, "dtype": uint16}; BUILD; POP`` put
    in front of its state dict: a pickle that tries to rewrite a shared stand-in."""
    module, name = target.rsplit(".", 1)
    poison = (_global(module, name) + b"}" + _str("bfloat16") + b"\x88s" + b"b0")
    with zipfile.ZipFile(real_bin) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/data.pkl"):
                assert data[:2] == b"\x80\x02"
                data = data[:2] + poison + data[2:]
            dst.writestr(item, data)
    return out


def _hf_dir(directory: Path, config: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **TINY_CONFIG, **(config or {})}))
    (directory / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n")
    return directory


def _edit_config(directory: Path, **changes: object) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return directory


def _edit_safetensors(directory: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> Path:
    weights = load_safetensors(directory / "model.safetensors")
    edit(weights)
    save_file(weights, directory / "model.safetensors")
    return directory


def _safetensors_file(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _tf_copy(tmp_path: Path, fixture: str = "squad") -> Path:
    return Path(shutil.copytree(TF / fixture, tmp_path / fixture))


def _tf_rewrite(directory: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> Path:
    with BundleReader(directory / "bert_model.ckpt") as reader:
        tensors = {name: reader.read(name) for name in reader.entries if reader.entries[name].dtype != 7}
    for p in directory.glob("bert_model.ckpt.*"):
        p.unlink()
    edit(tensors)
    writer.write_bundle(directory / "bert_model.ckpt", tensors)
    return directory


def _tf_claiming_shards(directory: Path, num_shards: int) -> Path:
    """The fixture's index rewritten to claim ``num_shards`` data files (its one file renamed to match)."""
    prefix = directory / "bert_model.ckpt"
    with BundleReader(prefix) as reader:
        entries = [writer.Entry(e.name, e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c or 0)
                   for e in reader.entries.values()]
    writer.write_index(Path(f"{prefix}.index"), entries, num_shards)
    Path(f"{prefix}.data-00000-of-00001").rename(f"{prefix}.data-00000-of-{num_shards:05d}")
    return directory


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


_CAPPED_LOAD = """
import sys
from pathlib import Path
from mbexport.errors import CheckpointFormatError
from mbexport.sources.hf_dir import load_hf_dir, load_safetensors
from mbexport.sources.tf_checkpoint import load_tf_checkpoint
from mbexport.sources.torch_pickle import load_torch_bin
try:
    {loader}(Path(sys.argv[1]))
except CheckpointFormatError as error:
    print("refused:", error)
    sys.exit(3)
print("loaded")
"""


def _load_capped(loader: str, path: Path) -> subprocess.CompletedProcess[str]:
    """Load ``path`` with ``loader`` in a subprocess that may map at most MEMORY_CAP bytes."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", _CAPPED_LOAD.format(loader=loader), str(path)], capture_output=True,
                          text=True, timeout=300, preexec_fn=_cap_memory, env=env, check=False,
                          cwd=path.parent)  # not the repo root, whose source folder would shadow the install


def _assert_refused(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stdout, result.stdout + result.stderr
    assert fragment in result.stdout, result.stdout


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Class 2: the restricted unpickler cannot be poisoned


@pytest.mark.parametrize("target", ["torch.FloatStorage", "torch.float32", "torch._utils._rebuild_tensor_v2",
                                    "collections.OrderedDict"])
def test_build_on_a_stand_in_is_refused_and_later_loads_are_unaffected(tiny_checkpoint, tmp_path: Path,
                                                                      target: str) -> None:
    real = tiny_checkpoint(head="base", fmt="bin") / "pytorch_model.bin"
    poisoned = _poisoned(real, tmp_path / "poisoned.bin", target)
    refusal = None
    try:
        load_torch_bin(poisoned)
    except CheckpointFormatError as error:
        refusal = error
    # Whatever the poisoned file did, this process still reads a legitimate float32 file as torch does.
    theirs = torch.load(real, weights_only=True)
    ours = load_torch_bin(real)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.numpy().dtype, name
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)
    assert isinstance(refusal, UnsafeCheckpointError) and "refused to set the state" in str(refusal)


def test_state_dict_metadata_is_still_built(tmp_path: Path) -> None:
    """torch.save's OrderedDict carries ``_metadata`` through BUILD: that one stays allowed."""
    state = torch.nn.Linear(3, 2).state_dict()
    path = tmp_path / "linear.bin"
    torch.save(state, path)
    with zipfile.ZipFile(path) as archive:
        assert archive.read("linear/data.pkl").endswith(b"b.")  # BUILD, STOP
    ours = load_torch_bin(path)
    for name, tensor in state.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy())


def test_protocol_5_bytearray_is_refused(tmp_path: Path) -> None:
    """BYTEARRAY8 allocates its declared length before reading; torch.save never writes it."""
    data_pkl = b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b"."
    with pytest.raises(UnsafeCheckpointError, match="bytearray"):
        load_torch_bin(_zip_bin(tmp_path / "b.bin", data_pkl, {}))


# ---------------------------------------------------------------------------------------------
# Class 3: configs and weights that describe different models


@pytest.mark.parametrize("layers", [1, 0, -1, True, "2", 2.5, None])
def test_wrong_layer_count_is_refused(tiny_checkpoint, layers: object) -> None:
    directory = _edit_config(tiny_checkpoint(head="base", fmt="safetensors"), num_hidden_layers=layers)
    with pytest.raises(CheckpointFormatError, match="num_hidden_layers|encoder.layer.1") as error:
        load_hf_dir(directory)
    assert "config.json" in _one_line(error) or "encoder.layer.1." in _one_line(error)


def test_fewer_layers_names_the_unused_weights(tiny_checkpoint) -> None:
    directory = _edit_config(tiny_checkpoint(head="base", fmt="bin"), num_hidden_layers=1)
    with pytest.raises(CheckpointFormatError) as error:
        load_hf_dir(directory)
    message = _one_line(error)
    assert "weight(s) that no part of a 1-layer BERT uses" in message
    assert message.count("encoder.layer.1.") == 3 and "..." in message


def test_relative_position_embeddings_are_refused(tiny_checkpoint) -> None:
    def add_distance(weights: dict[str, np.ndarray]) -> None:
        for layer in range(TINY_CONFIG["num_hidden_layers"]):
            weights[f"encoder.layer.{layer}.attention.self.distance_embedding.weight"] = np.ones((127, 12), np.float32)

    directory = _edit_safetensors(tiny_checkpoint(head="base", fmt="safetensors"), add_distance)
    with pytest.raises(CheckpointFormatError, match="distance_embedding"):  # the weights alone are refused
        load_hf_dir(directory)
    _edit_config(directory, position_embedding_type="relative_key")
    with pytest.raises(CheckpointFormatError, match="position_embedding_type is 'relative_key'") as error:
        load_hf_dir(directory)
    assert "config.json" in _one_line(error)


@pytest.mark.parametrize(("option", "value"), [("position_embedding_type", "relative_key_query"),
                                               ("is_decoder", True), ("add_cross_attention", True),
                                               ("is_encoder_decoder", True), ("pruned_heads", {"0": [1]})])
def test_unimplemented_architecture_options_are_refused(tiny_checkpoint, option: str, value: object) -> None:
    assert option in UNSUPPORTED_OPTIONS
    directory = _edit_config(tiny_checkpoint(head="base", fmt="safetensors"), **{option: value})
    with pytest.raises(CheckpointFormatError, match=f"{option} is"):
        load_hf_dir(directory)


def test_defaults_of_those_options_still_load(tiny_checkpoint) -> None:
    directory = _edit_config(tiny_checkpoint(head="base", fmt="safetensors"), position_embedding_type="absolute",
                             is_decoder=False, add_cross_attention=False, pruned_heads={}, chunk_size_feed_forward=0)
    assert load_hf_dir(directory).spec.num_layers == TINY_CONFIG["num_hidden_layers"]


def test_weights_of_no_known_part_are_refused(tiny_checkpoint) -> None:
    def add(weights: dict[str, np.ndarray]) -> None:
        for name in ("adapter.down.weight", "adapter.up.weight", "lm_head.weight", "zz.extra"):
            weights[name] = np.zeros((2, 2), np.float32)

    directory = _edit_safetensors(tiny_checkpoint(head="base", fmt="safetensors"), add)
    with pytest.raises(CheckpointFormatError) as error:
        load_hf_dir(directory)
    message = _one_line(error)
    assert "4 weight(s)" in message and "adapter.down.weight, adapter.up.weight, lm_head.weight, ..." in message


def test_masked_lm_checkpoint_converts_its_encoder(tmp_path: Path) -> None:
    """BertForMaskedLM weights (cls.predictions.* without NSP) are the masked-lm head: kept, not refused."""
    model = transformers.BertForMaskedLM(transformers.BertConfig(**TINY_CONFIG)).eval()
    directory = _hf_dir(tmp_path / "mlm")
    model.save_pretrained(directory)
    checkpoint = load_hf_dir(directory)
    assert checkpoint.spec.heads == ("base", "masked-lm")
    assert "cls.predictions.transform.dense.weight" in checkpoint.weights
    reference = model.bert.state_dict()
    for name, tensor in reference.items():
        if not name.endswith("_ids"):
            np.testing.assert_array_equal(checkpoint.weights[name], tensor.numpy(), err_msg=name)


@pytest.mark.parametrize(("architecture", "head"), [("BertForTokenClassification", "token-classification"),
                                                    ("BertForMultipleChoice", "multiple-choice")])
def test_foreign_classifier_is_never_offered_as_a_sequence_classifier(tmp_path: Path, architecture: str,
                                                                      head: str) -> None:
    """A per-token (or per-choice) classifier has a sequence classifier's weight names; exporting
    it as one would be a wrong model that passes parity, so only its own head is offered."""
    config = transformers.BertConfig(**TINY_CONFIG, num_labels=3)
    directory = _hf_dir(tmp_path / architecture)
    getattr(transformers, architecture)(config).save_pretrained(directory)
    checkpoint = load_hf_dir(directory)
    assert checkpoint.spec.heads == ("base", head)
    assert "classifier.weight" in checkpoint.weights


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"num_attention_heads": 0}, "num_attention_heads is 0;"),
    ({"num_attention_heads": -3}, "num_attention_heads is -3;"),
    ({"num_attention_heads": 5}, "not divisible"),
    ({"hidden_size": "36"}, "hidden_size is '36';"),
    ({"intermediate_size": 52.5}, "intermediate_size is 52.5;"),
    ({"vocab_size": 10**12}, "vocab_size is 1000000000000;"),
    ({"vocab_size": 1}, "vocab_size is 1;"),
    ({"max_position_embeddings": 0}, "max_position_embeddings is 0;"),
    ({"type_vocab_size": False}, "type_vocab_size is False;"),
    ({"layer_norm_eps": "1e-12"}, "layer_norm_eps"),
    ({"layer_norm_eps": -1e-12}, "layer_norm_eps"),
    ({"layer_norm_eps": 0}, "layer_norm_eps"),
    ({"layer_norm_eps": float("nan")}, "layer_norm_eps"),
    ({"hidden_act": ["gelu"]}, "hidden_act"),
    ({"num_labels": 3, "id2label": {"0": "a", "1": "b"}}, "disagrees"),
    ({"id2label": {"0": "a", "2": "b"}}, "id2label"),
    ({"id2label": ["a", "b"]}, "id2label"),
    ({"num_labels": 0}, "num_labels"),
])  # fmt: skip
def test_config_values_are_type_and_range_checked(tiny_checkpoint, changes: dict, fragment: str) -> None:
    directory = _edit_config(tiny_checkpoint(head="base", fmt="safetensors"), **changes)
    with pytest.raises(CheckpointFormatError, match=fragment) as error:
        load_hf_dir(directory)
    assert str(directory / "config.json") in _one_line(error)


def test_whole_floats_are_whole_numbers() -> None:
    spec = BertSpec.from_config({**TINY_CONFIG, "num_hidden_layers": 2.0, "hidden_size": 36.0})
    assert spec.num_layers == 2 and isinstance(spec.num_layers, int) and spec.hidden_size == 36


def test_tf_config_is_checked_too(tmp_path: Path) -> None:
    directory = _tf_copy(tmp_path)
    _edit_config_file(directory / "bert_config.json", position_embedding_type="relative_key")
    with pytest.raises(CheckpointFormatError, match="bert_config.json: position_embedding_type"):
        load_tf_checkpoint(directory)


def _edit_config_file(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ---------------------------------------------------------------------------------------------
# Class 4: NaN and Inf


@pytest.mark.parametrize(("fmt", "name", "value"), [
    ("safetensors", "pooler.dense.weight", np.nan),
    ("bin", "encoder.layer.0.attention.self.query.weight", np.inf),
    ("safetensors", "embeddings.word_embeddings.weight", -np.inf),  # in the last vocabulary row
])  # fmt: skip
def test_non_finite_weights_are_refused_at_load(tiny_checkpoint, fmt: str, name: str, value: float) -> None:
    directory = tiny_checkpoint(head="base", fmt=fmt)
    if fmt == "bin":
        state = torch.load(directory / "pytorch_model.bin", weights_only=True)
        state[name].view(-1)[-1] = value
        torch.save(state, directory / "pytorch_model.bin")
    else:
        _edit_safetensors(directory, lambda w: w[name].reshape(-1).__setitem__(-1, value))
    with pytest.raises(CheckpointFormatError, match=f"weight '{name}' holds NaN or Inf") as error:
        load_hf_dir(directory)
    _one_line(error)


def test_non_finite_tf_weight_is_refused(tmp_path: Path) -> None:
    def poison(tensors: dict[str, np.ndarray]) -> None:
        tensors["bert/embeddings/word_embeddings"][-1, 0] = np.nan

    directory = _tf_rewrite(_tf_copy(tmp_path), poison)
    with pytest.raises(CheckpointFormatError, match="'embeddings.word_embeddings.weight' holds NaN"):
        load_tf_checkpoint(directory)


def _outputs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("side", ["export", "reference"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_parity_fails_on_non_finite_outputs(side: str, value: float) -> None:
    """A NaN column in the pooled output used to be skipped (NaN marked padding), so it passed."""
    rng = np.random.default_rng(0)
    ours = _outputs(rng, (2, 8))
    reference = ours.copy()
    (ours if side == "export" else reference)[:, 3] = value
    mask = np.ones((2, 5), np.int64)
    figures = compare("pooler_output", [ours], [reference], [mask], "fp32")
    assert not figures.passed and figures.non_finite == 2
    assert figures.max_abs == 0.0  # the figures cover the finite values, and stay valid JSON
    report = ParityReport("reference", "fp32", ["batch"], [figures])
    assert not report.passed and report.summary().startswith("pooler_output has 2 NaN or Inf values on real tokens")
    json.dumps(report.to_dict(), allow_nan=False)


def test_parity_ignores_padding_by_the_mask_not_by_nan() -> None:
    rng = np.random.default_rng(1)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    ours = _outputs(rng, (2, 4))
    reference = ours + 1e-6
    ours[mask == 0], reference[mask == 0] = np.inf, np.nan  # whatever padding holds does not count
    figures = compare("start_logits", [ours], [reference], [mask], "fp32")
    assert figures.passed and figures.max_abs < 2e-6 and figures.non_finite == 0
    reference[0, 1] = np.nan  # a real token
    figures = compare("start_logits", [ours], [reference], [mask], "fp32")
    assert not figures.passed and figures.non_finite == 1


def test_convert_fails_when_outputs_overflow(tiny_checkpoint, tmp_path: Path) -> None:
    """Finite weights whose logits overflow float32 on both sides: inf - inf is no agreement."""
    directory = _edit_safetensors(tiny_checkpoint(head="classification", fmt="safetensors"),
                                  lambda w: w["classifier.weight"].fill(3e38))
    out = tmp_path / "export"
    result = run_mbexport("convert", str(directory), "--out", str(out), text=True,
                          env={"MBEXPORT_HOME": str(tmp_path / "home")})
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "logits has" in result.stderr and "NaN or Inf values on real tokens" in result.stderr, result.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Class 5: resource bombs


def test_stride_zero_tensor_larger_than_its_storage(tmp_path: Path) -> None:
    """One float, viewed as a 16384 x 16384 tensor (1 GiB) by strides of 0, in a file under 1 KB."""
    data_pkl = _state_pickle({"w": _tensor("0", 1, 0, (16384, 16384), (0, 0))})
    path = _zip_bin(tmp_path / "pytorch_model.bin", data_pkl, {"0": struct.pack("<f", 1.0)})
    assert path.stat().st_size < 1024
    _assert_refused(_load_capped("load_torch_bin", path), "repeats the 1 elements of storage 0")


def test_many_tensors_on_one_storage(tmp_path: Path) -> None:
    """300 full views of one 4 MiB storage would copy out 1.2 GB."""
    numel = 1 << 20
    tensors = {f"w{i}": _tensor("0", numel, 0, (numel,), (1,)) for i in range(300)}
    path = _zip_bin(tmp_path / "pytorch_model.bin", _state_pickle(tensors), {"0": bytes(4 * numel)})
    _assert_refused(_load_capped("load_torch_bin", path), "cannot hold more than their storages")


def test_tied_weights_sharing_a_storage_still_load(tmp_path: Path) -> None:
    embeddings = torch.randn(7, 3)
    state = {"embeddings": embeddings, "decoder": embeddings.view(7, 3), "bias": torch.randn(7)}
    torch.save(state, tmp_path / "tied.bin")
    ours = load_torch_bin(tmp_path / "tied.bin")
    np.testing.assert_array_equal(ours["decoder"], embeddings.numpy())


@pytest.mark.parametrize("member", ["data/0", "data.pkl"])
def test_deflated_member_cannot_inflate(tmp_path: Path, member: str) -> None:
    """A DEFLATE member inflating to 600 MB in a file of ~600 KB: a storage, or zeros after
    data.pkl's STOP (the unpickler stops there, but the old reader read the member whole)."""
    numel = 150 << 20
    if member == "data/0":  # a storage of 150M zero floats
        data_pkl = _state_pickle({"w": _tensor("0", numel, 0, (numel,), (1,))})
    else:  # an empty tensor's pickle, zeros after its STOP
        data_pkl = _state_pickle({"w": _tensor("0", 0, 0, (0,), (1,))})
    path = _zip_bin(tmp_path / "pytorch_model.bin", data_pkl, {"0": b""}, deflate=(member,),
                    padding={member: 4 * numel})
    assert path.stat().st_size < 4 << 20
    _assert_refused(_load_capped("load_torch_bin", path), "is compressed" if member == "data/0" else "data.pkl claims")


def test_legacy_storage_count_beyond_the_file(tmp_path: Path) -> None:
    """A legacy .bin whose storage says 2^40 elements follow, in a file of a few hundred bytes."""
    legacy = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    legacy += _state_pickle({"w": _tensor("0", 1, 0, (1,), (1,), legacy=True)})
    legacy += pickle.dumps(["0"], protocol=2) + struct.pack("<q", 1 << 40) + struct.pack("<f", 1.0)
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(legacy)
    _assert_refused(_load_capped("load_torch_bin", path), "the pickle says 1 FloatStorage elements")


def test_legacy_bin_still_loads(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "view": torch.randn(6)[2:]}
    torch.save(tensors, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    ours = load_torch_bin(tmp_path / "legacy.bin")
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy())


def test_safetensors_shape_whose_product_overflows(tmp_path: Path) -> None:
    """2^33 x 2^31 floats: the int64 product wraps to 0, which matched an empty byte range."""
    header = {"w": {"dtype": "F32", "shape": [1 << 33, 1 << 31], "data_offsets": [0, 0]}}
    with pytest.raises(CheckpointFormatError, match="do not fit shape"):
        load_safetensors(_safetensors_file(tmp_path / "model.safetensors", header, b""))


def test_safetensors_overlapping_tensors(tmp_path: Path) -> None:
    """300 tensors over the same 4 MiB would copy out 1.2 GB."""
    numel = 1 << 20
    header = {f"w{i}": {"dtype": "F32", "shape": [numel], "data_offsets": [0, 4 * numel]} for i in range(300)}
    path = _safetensors_file(tmp_path / "model.safetensors", header, bytes(4 * numel))
    _assert_refused(_load_capped("load_safetensors", path), "overlap")


def test_tf_index_claiming_10_to_the_8_shards(tmp_path: Path) -> None:
    directory = _tf_claiming_shards(_tf_copy(tmp_path), 10**8)
    _assert_refused(_load_capped("load_tf_checkpoint", directory), "bert_model.ckpt.data-00001-of-100000000 is missing")


def test_config_past_any_configs_size_is_refused_unread(tiny_checkpoint) -> None:
    directory = _sparse(tiny_checkpoint(head="base", fmt="safetensors") / "config.json", MAX_FILE_BYTES + 1)
    _assert_refused(_load_capped("load_hf_dir", directory), "over 64 MiB, more than any JSON config holds")


def test_tf_index_past_any_checkpoints_size_is_refused_unread(tmp_path: Path) -> None:
    """Under the memory cap, an index of 257 MiB (sparse: it costs no disk) is refused before it is read."""
    directory = _tf_copy(tmp_path)
    _sparse(directory / "bert_model.ckpt.index", MAX_INDEX_BYTES + 1)
    _assert_refused(_load_capped("load_tf_checkpoint", directory), "more than any checkpoint's index holds")


@pytest.mark.parametrize("source", ["hf", "tf"])
def test_config_with_10_to_the_8_layers(tiny_checkpoint, tmp_path: Path, source: str) -> None:
    if source == "hf":
        directory, loader = _edit_config(tiny_checkpoint(head="base", fmt="safetensors"), num_hidden_layers=10**8), \
            "load_hf_dir"
    else:
        directory, loader = _tf_copy(tmp_path), "load_tf_checkpoint"
        _edit_config_file(directory / "bert_config.json", num_hidden_layers=10**8)
    _assert_refused(_load_capped(loader, directory), f"num_hidden_layers is 100000000; it must be a whole number "
                                                     f"from 1 to {MAX_LAYERS}")


def test_oversized_shard_index(tiny_checkpoint) -> None:
    directory = tiny_checkpoint(head="base", fmt="safetensors")
    (directory / "model.safetensors").rename(directory / "model-00001-of-00001.safetensors")
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}, "pad": "x" * (17 << 20)}))
    with pytest.raises(CheckpointFormatError, match="more than any shard index needs"):
        load_hf_dir(directory)


# ---------------------------------------------------------------------------------------------
# Class 7: paths


def _sharded(directory: Path, names: tuple[str, str]) -> Path:
    """The directory's safetensors split in two shard files at ``names`` (relative to it), with an index."""
    weights = load_safetensors(directory / "model.safetensors")
    keys = sorted(weights)
    halves = (keys[: len(keys) // 2], keys[len(keys) // 2:])
    weight_map = {}
    for name, part in zip(names, halves):
        save_file({k: weights[k] for k in part}, directory / name)
        weight_map.update({k: name for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (directory / "model.safetensors").unlink()
    return directory


@pytest.mark.parametrize("outside", ["../outside.safetensors", "sub/inner.safetensors", "{abs}",
                                     "model-00002-of-00002.bin"])
def test_shard_index_cannot_leave_the_directory(tiny_checkpoint, outside: str) -> None:
    directory = tiny_checkpoint(head="base", fmt="safetensors")
    (directory / "sub").mkdir()
    target = outside.format(abs=directory.parent / "abs.safetensors")
    _sharded(directory, ("model-00001-of-00002.safetensors", target))
    assert (directory / target).is_file()  # a real, loadable shard sits there
    with pytest.raises(CheckpointFormatError, match="is not a .safetensors file in the checkpoint directory") as error:
        load_hf_dir(directory)
    assert "model.safetensors.index.json" in _one_line(error)


def test_shard_index_may_not_name_system_files(tiny_checkpoint) -> None:
    directory = tiny_checkpoint(head="base", fmt="bin")
    (directory / "pytorch_model.bin").rename(directory / "pytorch_model-00001-of-00001.bin")
    weight_map = {"encoder.layer.0.output.dense.weight": "/etc/passwd",
                  "pooler.dense.weight": "pytorch_model-00001-of-00001.bin"}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointFormatError, match="'/etc/passwd' is not a .bin file"):
        load_hf_dir(directory)


def test_sharded_snapshot_of_symlinks_into_blobs_loads(tiny_checkpoint, hf_cache, tmp_path: Path) -> None:
    """In the HF cache every snapshot file is a symlink to ../../blobs: that layout is not 'outside'."""
    source = _sharded(tiny_checkpoint(head="base", fmt="safetensors"),
                      ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"))
    hf_home = hf_cache("org/sharded", source)
    snapshot = next((hf_home / "hub" / "models--org--sharded" / "snapshots").iterdir())
    assert (snapshot / "model-00001-of-00002.safetensors").is_symlink()
    assert load_hf_dir(snapshot).weights.keys() == load_hf_dir(source).weights.keys()


def test_tf_checkpoint_state_file_cannot_leave_the_directory(tmp_path: Path) -> None:
    """TF's ``checkpoint`` file names the latest prefix; only its name counts, inside the directory."""
    real = _tf_copy(tmp_path)
    lure = tmp_path / "lure"
    lure.mkdir()
    for named in (real / "bert_model.ckpt", "../squad/bert_model.ckpt"):
        (lure / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\n')
        with pytest.raises(SourceNotFoundError, match="no TF checkpoint"):
            find_prefix(lure)


def test_tf_checkpoint_state_file_from_another_machine(tmp_path: Path) -> None:
    """A directory of two checkpoints whose state file holds the training machine's absolute path."""
    directory = _tf_copy(tmp_path)
    for step in (1000, 2000):
        for file in directory.glob("bert_model.ckpt.*"):
            shutil.copy(file, directory / file.name.replace("bert_model.ckpt", f"model.ckpt-{step}"))
    for file in directory.glob("bert_model.ckpt.*"):
        file.unlink()
    (directory / "checkpoint").write_text('model_checkpoint_path: "/gone/run/model.ckpt-1000"\n')
    assert find_prefix(directory) == directory / "model.ckpt-1000"


# ---------------------------------------------------------------------------------------------
# Through the console script: one line on stderr, non-zero exit, nothing written


def _poisoned_dir(tiny_checkpoint, tmp_path: Path) -> Path:
    real = tiny_checkpoint(head="base", fmt="bin") / "pytorch_model.bin"
    directory = _hf_dir(tmp_path / "poisoned")
    _poisoned(real, directory / "pytorch_model.bin", "torch.FloatStorage")
    return directory


def _nan_dir(tiny_checkpoint, name: str) -> Path:
    return _edit_safetensors(tiny_checkpoint(head="base", fmt="safetensors"),
                             lambda w: w[name].reshape(-1).__setitem__(0, np.nan))


def _bin_dir(tmp_path: Path, tensors: dict[str, bytes], storages: dict[str, bytes], **options: object) -> Path:
    directory = _hf_dir(tmp_path / "bomb")
    _zip_bin(directory / "pytorch_model.bin", _state_pickle(tensors), storages, **options)
    return directory


def _overflowing_dir(tmp_path: Path) -> Path:
    directory = _hf_dir(tmp_path / "shape")
    _safetensors_file(directory / "model.safetensors",
                      {"w": {"dtype": "F32", "shape": [1 << 33, 1 << 31], "data_offsets": [0, 0]}}, b"")
    return directory


CLI_CASES: dict[str, Callable[..., Path]] = {
    "poisoned-pickle": _poisoned_dir,
    "layers--1": lambda tc, tmp: _edit_config(tc(head="base", fmt="safetensors"), num_hidden_layers=-1),
    "relative-key": lambda tc, tmp: _edit_config(tc(head="base", fmt="safetensors"),
                                                 position_embedding_type="relative_key"),
    "nan-pooler": lambda tc, tmp: _nan_dir(tc, "pooler.dense.weight"),
    "nan-encoder": lambda tc, tmp: _nan_dir(tc, "encoder.layer.1.output.dense.weight"),
    "stride-bomb": lambda tc, tmp: _bin_dir(tmp, {"w": _tensor("0", 1, 0, (16384, 16384), (0, 0))}, {"0": bytes(4)}),
    "deflate-bomb": lambda tc, tmp: _bin_dir(tmp, {"w": _tensor("0", 1 << 20, 0, (1 << 20,), (1,))},
                                             {"0": bytes(4 << 20)}, deflate=("data/0",)),
    "tf-shards": lambda tc, tmp: _tf_claiming_shards(_tf_copy(tmp), 10**8),
    "index-escape": lambda tc, tmp: _sharded(tc(head="base", fmt="safetensors"),
                                             ("model-00001-of-00002.safetensors", "../escape.safetensors")),
    "safetensors-shape": lambda tc, tmp: _overflowing_dir(tmp),
    # JSON nested past the parser's depth (it raises RecursionError), and a JSON file past any config's size
    "config-nested": lambda tc, tmp: _write(tc(head="base", fmt="safetensors") / "config.json", b"[" * 100_000),
    "config-64mib": lambda tc, tmp: _sparse(tc(head="base", fmt="safetensors") / "config.json", (64 << 20) + 1),
    "header-nested": lambda tc, tmp: _write(_hf_dir(tmp / "nested") / "model.safetensors",
                                            struct.pack("<Q", 50_000) + b"[" * 50_000),
}


def _write(path: Path, data: bytes) -> Path:
    """Writes ``data`` over ``path``; returns its directory."""
    path.write_bytes(data)
    return path.parent


def _sparse(path: Path, size: int) -> Path:
    """Makes ``path`` a file of ``size`` zero bytes (sparse: nothing is written); returns its directory."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path.parent


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_hostile_checkpoint_in_one_line(tiny_checkpoint, tmp_path: Path, case: str) -> None:
    source = CLI_CASES[case](tiny_checkpoint, tmp_path)
    out = tmp_path / "export"
    result = run_mbexport("convert", str(source), "--out", str(out), text=True, preexec_fn=_cap_memory,
                          env={"MBEXPORT_HOME": str(tmp_path / "home"), "OPENBLAS_NUM_THREADS": "1"})
    assert_one_line_error(result)
    assert not out.exists()
