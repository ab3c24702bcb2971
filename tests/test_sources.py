"""Checkpoint sources on real files: torch-free .bin reader, safetensors, HF dirs, the HF cache.

Every file here is written by torch / transformers / safetensors themselves (or is a real
checkpoint); the HF cache is laid out on disk exactly as huggingface_hub lays it out.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mbexport.catalog import Source, resolve
from mbexport.errors import CheckpointFormatError, ShapeError, SourceNotFoundError, UnsafeCheckpointError
from mbexport.sources import load_checkpoint
from mbexport.sources.hf_dir import load_hf_dir, load_safetensors
from mbexport.sources.hub import fetch, weight_patterns
from mbexport.sources.torch_pickle import load_torch_bin
from mbexport.spec import canonical_name

torch = pytest.importorskip("torch")


def _state_dict(directory: Path) -> dict[str, np.ndarray]:
    """The reference: what torch itself loads, in canonical names, tied copies and buffers dropped."""
    loaded = torch.load(directory / "pytorch_model.bin", weights_only=True)
    out = {canonical_name(k): v.float().numpy() for k, v in loaded.items() if not k.endswith("_ids")}
    out.pop("cls.predictions.decoder.bias", None)
    out.pop("cls.predictions.decoder.weight", None)
    return out


def _assert_weights_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].dtype == np.float32, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


# ---------------------------------------------------------------------------------------------
# torch_pickle: the restricted unpickler


@pytest.mark.parametrize("head", ["pretraining", "qa", "classification", "base"])
def test_bin_equals_torch_load(tiny_checkpoint, head: str) -> None:
    path = tiny_checkpoint(head=head, fmt="bin") / "pytorch_model.bin"
    ours = load_torch_bin(path)
    theirs = torch.load(path, weights_only=True)
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.numpy().dtype, name
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


def _tricky_tensors() -> dict[str, object]:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    return {
        "transposed": base.t(),  # non-contiguous: strides (1, 10)
        "row_view": base[2],  # shares base's storage at offset 20
        "strided": base[::2, 1::3],  # offset + two strides
        "base": base,
        "half": torch.randn(3, 4).half(),
        "bf16": torch.randn(5, 2).to(torch.bfloat16),
        "double": torch.randn(2, 2, dtype=torch.float64),
        "long": torch.arange(7),
        "int8": torch.tensor([-3, 0, 5], dtype=torch.int8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_bin_dtypes_views_and_legacy_format(tmp_path: Path, zip_format: bool) -> None:
    tensors = _tricky_tensors()
    path = tmp_path / "weights.bin"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) is zip_format
    ours = load_torch_bin(path)
    for name, tensor in tensors.items():
        expected = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert ours[name].dtype == expected.dtype, name
        assert ours[name].shape == expected.shape, name
        assert ours[name].flags.c_contiguous, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)


def test_bin_zip_top_folder_name_varies(tiny_checkpoint, tmp_path: Path) -> None:
    original = tiny_checkpoint(head="qa", fmt="bin") / "pytorch_model.bin"
    renamed = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(renamed, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            dst.writestr("some_other_name/" + item.filename.split("/", 1)[1], src.read(item))
    ours = load_torch_bin(renamed)
    theirs = torch.load(original, weights_only=True)
    for name, tensor in theirs.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy())


class _Payload:
    """Unpickling this runs ``func(*args)``: the classic pickle attack."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "subprocess": _Payload(subprocess.check_call, ["touch", str(marker)]),
        "eval": _Payload(eval, f"open({str(marker)!r}, 'w').close()"),
    }


def _malicious_zip_bin(real_bin: Path, out: Path, payload: _Payload) -> Path:
    """A real checkpoint whose data.pkl also carries ``payload`` next to the tensors."""
    with zipfile.ZipFile(real_bin) as src:
        names = src.namelist()
        pkl_name = next(n for n in names if n.endswith("data.pkl"))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
            for name in names:
                if name == pkl_name:
                    dst.writestr(name, pickle.dumps({"bert.embeddings.evil": payload}, protocol=2))
                else:
                    dst.writestr(name, src.read(name))
    return out


@pytest.mark.parametrize("attack", ["os.system", "subprocess", "eval"])
def test_malicious_bin_is_refused_and_never_runs(tiny_checkpoint, tmp_path: Path, attack: str) -> None:
    # The payload is real: plain pickle runs it.
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_payloads(control)[attack]))
    assert control.exists()

    marker = tmp_path / "marker"
    real = tiny_checkpoint(head="pretraining", fmt="bin") / "pytorch_model.bin"
    bad = _malicious_zip_bin(real, tmp_path / "pytorch_model.bin", _payloads(marker)[attack])
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torch_bin(bad)
    message = str(info.value)
    assert "refused to run pickle global" in message and "\n" not in message
    expected_global = {"os.system": "system", "subprocess": "check_call", "eval": ".eval"}[attack]
    assert expected_global in message
    assert not marker.exists()

    # Through the HF directory loader too.
    model_dir = bad.parent
    for name in ("config.json", "vocab.txt"):
        (model_dir / name).write_bytes((real.parent / name).read_bytes())
    with pytest.raises(UnsafeCheckpointError):
        load_hf_dir(model_dir)
    assert not marker.exists()


def test_malicious_legacy_bin_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(pickle.dumps(_payloads(marker)["os.system"], protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="refused to run pickle global"):
        load_torch_bin(path)
    assert not marker.exists()


def test_bin_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(CheckpointFormatError, match="pytorch_model.bin"):
        load_torch_bin(path)
    real = io.BytesIO()
    torch.save({"w": torch.ones(3)}, real)
    path.write_bytes(real.getvalue()[: len(real.getvalue()) // 2])
    with pytest.raises(CheckpointFormatError, match="pytorch_model.bin"):
        load_torch_bin(path)


# ---------------------------------------------------------------------------------------------
# HF directories


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@pytest.mark.parametrize(
    ("head", "heads"),
    [("pretraining", ("base", "pretraining")), ("qa", ("base", "qa")), ("classification", ("base", "classification")),
     ("base", ("base",))],
)  # fmt: skip
def test_hf_dir_loads(tiny_checkpoint, fmt: str, head: str, heads: tuple[str, ...]) -> None:
    directory = tiny_checkpoint(head=head, fmt=fmt)
    checkpoint = load_hf_dir(directory, "tiny", "main")
    assert checkpoint.spec.heads == heads
    assert (checkpoint.spec.num_layers, checkpoint.spec.hidden_size, checkpoint.spec.num_heads) == (2, 36, 3)
    assert checkpoint.spec.intermediate_size == 52 and checkpoint.spec.vocab_size == 99
    if head == "classification":
        assert checkpoint.spec.num_labels == 3
    assert checkpoint.vocab_file == directory / "vocab.txt"
    assert set(checkpoint.tokenizer_files) == {"tokenizer_config.json", "special_tokens_map.json"}
    assert checkpoint.source == "tiny" and checkpoint.revision == "main"
    assert len(checkpoint.weights_sha256) == 64
    assert checkpoint.has_pooler == (head != "qa")  # BertForQuestionAnswering has no pooler
    if fmt == "bin":
        _assert_weights_equal(checkpoint.weights, _state_dict(directory))


def test_safetensors_and_bin_agree(tiny_checkpoint) -> None:
    a = load_hf_dir(tiny_checkpoint(head="pretraining", fmt="bin", seed=3))
    b = load_hf_dir(tiny_checkpoint(head="pretraining", fmt="safetensors", seed=3))
    _assert_weights_equal(a.weights, b.weights)
    assert a.weights_sha256 != b.weights_sha256


def test_safetensors_reader_matches_the_library(tiny_checkpoint, tmp_path: Path) -> None:
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    path = tiny_checkpoint(head="qa", fmt="safetensors") / "model.safetensors"
    expected = load_file(path)
    ours = load_safetensors(path)
    assert sorted(ours) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(ours[name], expected[name])

    mixed = {"bf16": torch.randn(4, 3).to(torch.bfloat16), "f16": torch.randn(2).half(), "i64": torch.arange(5)}
    save_file(mixed, tmp_path / "mixed.safetensors")
    ours = load_safetensors(tmp_path / "mixed.safetensors")
    np.testing.assert_array_equal(ours["bf16"], mixed["bf16"].float().numpy())
    np.testing.assert_array_equal(ours["f16"], mixed["f16"].numpy())
    np.testing.assert_array_equal(ours["i64"], mixed["i64"].numpy())


def _shard(directory: Path, fmt: str) -> None:
    """Split the directory's weights into two shards plus an index, as save_pretrained does."""
    from safetensors.torch import save_file

    single = directory / ("pytorch_model.bin" if fmt == "bin" else "model.safetensors")
    if fmt == "bin":
        state = torch.load(single, weights_only=True)
    else:
        from safetensors.torch import load_file

        state = load_file(single)
    names = list(state)
    halves = (names[: len(names) // 2], names[len(names) // 2 :])
    weight_map = {}
    for i, part in enumerate(halves, 1):
        if fmt == "bin":
            shard_name = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save({n: state[n].clone() for n in part}, directory / shard_name)
        else:
            shard_name = f"model-{i:05d}-of-00002.safetensors"
            save_file({n: state[n].contiguous() for n in part}, directory / shard_name)
        weight_map.update({n: shard_name for n in part})
    (directory / f"{single.name}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    single.unlink()


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_sharded_checkpoints(tiny_checkpoint, fmt: str) -> None:
    whole = load_hf_dir(tiny_checkpoint(head="pretraining", fmt=fmt, seed=5))
    directory = tiny_checkpoint(head="pretraining", fmt=fmt, seed=5)
    _shard(directory, fmt)
    sharded = load_hf_dir(directory)
    _assert_weights_equal(sharded.weights, whole.weights)
    assert sharded.spec == whole.spec

    first_shard = sorted(directory.glob("*-00001-of-00002*"))[0]
    first_shard.unlink()
    with pytest.raises(CheckpointFormatError, match="shards that are missing"):
        load_hf_dir(directory)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_safetensors(tiny_checkpoint, keep: float) -> None:
    directory = tiny_checkpoint(head="base", fmt="safetensors")
    path = directory / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointFormatError) as info:
        load_checkpoint(Source("tiny", path=directory))
    message = str(info.value)
    assert "model.safetensors" in message and "truncated or corrupt" in message and "\n" not in message


def test_safetensors_with_garbage_header(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes((12).to_bytes(8, "little") + b"not json!!!!" + b"\0" * 16)
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        load_safetensors(path)
    path.write_bytes(b"\1\2")
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        load_safetensors(path)


@pytest.mark.parametrize(
    ("remove", "error", "fragments"),
    [
        ("config.json", CheckpointFormatError, ["config.json is missing"]),
        ("model.safetensors", CheckpointFormatError, ["no weights found", "model.safetensors", "pytorch_model.bin"]),
        ("vocab.txt", CheckpointFormatError, ["vocab.txt is missing"]),
    ],
)
def test_missing_files(tiny_checkpoint, remove: str, error: type[Exception], fragments: list[str]) -> None:
    directory = tiny_checkpoint(head="base", fmt="safetensors")
    (directory / remove).unlink()
    with pytest.raises(error) as info:
        load_checkpoint(Source("tiny", path=directory))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_tokenizer_files_are_optional(tiny_checkpoint) -> None:
    directory = tiny_checkpoint(head="base", fmt="safetensors")
    (directory / "special_tokens_map.json").unlink()
    assert set(load_hf_dir(directory).tokenizer_files) == {"tokenizer_config.json"}


@pytest.mark.parametrize(
    ("key", "value", "error", "fragment"),
    [
        ("intermediate_size", 60, ShapeError, "intermediate.dense.weight' has shape (52, 36) but the config implies (60, 36)"),
        ("hidden_size", 39, ShapeError, "embeddings.word_embeddings.weight' has shape (99, 36) but the config implies (99, 39)"),
        ("num_hidden_layers", 3, ShapeError, "encoder.layer.2.attention.self.query.weight' is missing"),
        ("vocab_size", 100, ShapeError, "has shape (99, 36) but the config implies (100, 36)"),
        ("hidden_size", 37, CheckpointFormatError, "not divisible by num_attention_heads"),
        ("model_type", "roberta", CheckpointFormatError, "BERT models only"),
    ],
)  # fmt: skip
def test_config_disagrees_with_weights(tiny_checkpoint, key: str, value: object, error: type, fragment: str) -> None:
    directory = tiny_checkpoint(head="pretraining", fmt="bin")
    config = json.loads((directory / "config.json").read_text())
    config[key] = value
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(error) as info:
        load_checkpoint(Source("tiny", path=directory))
    assert fragment in str(info.value)


def test_minilm_real_weights(minilm_dir: Path) -> None:
    checkpoint = load_checkpoint(resolve(str(minilm_dir)))
    spec = checkpoint.spec
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.intermediate_size) == (6, 384, 12, 1536)
    assert spec.vocab_size == 30522 and spec.heads == ("base",) and checkpoint.has_pooler
    assert "embeddings.position_ids" not in checkpoint.weights
    assert len(checkpoint.weights) == 6 * 16 + 5 + 2
    assert all(w.dtype == np.float32 for w in checkpoint.weights.values())
    from safetensors.numpy import load_file

    expected = load_file(minilm_dir / "model.safetensors")
    np.testing.assert_array_equal(
        checkpoint.weights["encoder.layer.5.output.dense.weight"], expected["encoder.layer.5.output.dense.weight"]
    )


# ---------------------------------------------------------------------------------------------
# The hub, through a real HF cache laid out by the test


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return monkeypatch


def test_multiberts_from_the_hf_cache_offline(tiny_checkpoint, hf_cache, offline) -> None:
    src = tiny_checkpoint(head="pretraining", fmt="bin", seed=11)
    offline.setenv("HF_HOME", str(hf_cache("google/multiberts-seed_1-step_200k", src)))
    checkpoint = load_checkpoint(resolve("seed_1", "step_200k"))
    _assert_weights_equal(checkpoint.weights, _state_dict(src))
    assert checkpoint.spec.heads == ("base", "pretraining")
    assert checkpoint.source == "google/multiberts-seed_1-step_200k"
    assert checkpoint.vocab_file.read_text() == (src / "vocab.txt").read_text()
    assert "snapshots" in str(checkpoint.vocab_file)


def test_earlyberts_revision_from_the_hf_cache_offline(tiny_checkpoint, hf_cache, offline) -> None:
    main = tiny_checkpoint(head="pretraining", fmt="bin", seed=1)
    step = tiny_checkpoint(head="pretraining", fmt="bin", seed=2)
    hf_cache("personads/earlyberts-seed1", main)
    offline.setenv("HF_HOME", str(hf_cache("personads/earlyberts-seed1", step, revision="step7000")))
    checkpoint = load_checkpoint(resolve("earlyberts-seed1 step7000"))
    _assert_weights_equal(checkpoint.weights, _state_dict(step))
    assert checkpoint.revision == "step7000"
    with pytest.raises(SourceNotFoundError, match="personads/earlyberts-seed1@step8000"):
        load_checkpoint(resolve("earlyberts-seed1 step8000"))


def test_hf_hub_cache_variable_wins(tiny_checkpoint, hf_cache, offline, tmp_path: Path) -> None:
    src = tiny_checkpoint(head="qa", fmt="safetensors")
    hf_home = hf_cache("google-bert/bert-large-cased-whole-word-masking-finetuned-squad", src)
    offline.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    offline.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    checkpoint = load_checkpoint(resolve("bert-large-cased-whole-word-masking-finetuned-squad"))
    assert checkpoint.spec.heads == ("base", "qa")


def test_offline_with_empty_cache(offline, tmp_path: Path) -> None:
    offline.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(SourceNotFoundError) as info:
        load_checkpoint(resolve("seed_1 step_200k"))
    message = str(info.value)
    assert "google/multiberts-seed_1-step_200k" in message and "--from PATH" in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message


def test_unreachable_hub_falls_back_to_the_cache(tiny_checkpoint, hf_cache, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(SourceNotFoundError) as info:
        fetch("google/multiberts-seed_3")
    assert "could not be reached" in str(info.value) and "--from PATH" in str(info.value)

    src = tiny_checkpoint(head="pretraining", fmt="bin")
    monkeypatch.setenv("HF_HOME", str(hf_cache("google/multiberts-seed_3", src)))
    folder = fetch("google/multiberts-seed_3")
    assert (folder / "pytorch_model.bin").is_file()


def test_from_path_wins_over_the_hub(tiny_checkpoint, offline, tmp_path: Path) -> None:
    offline.setenv("HF_HOME", str(tmp_path / "empty"))
    local = tiny_checkpoint(head="pretraining", fmt="bin")
    checkpoint = load_checkpoint(resolve("seed_1", "step_200k", local=local))
    assert checkpoint.source == "google/multiberts-seed_1-step_200k"
    _assert_weights_equal(checkpoint.weights, _state_dict(local))


def test_cached_snapshot_without_weights(tiny_checkpoint, hf_cache, offline, tmp_path: Path) -> None:
    src = tiny_checkpoint(head="base", fmt="safetensors")
    (src / "model.safetensors").unlink()
    offline.setenv("HF_HOME", str(hf_cache("org/partial", src)))
    with pytest.raises(SourceNotFoundError, match="no weights"):
        fetch("org/partial")


@pytest.mark.parametrize(
    ("files", "patterns"),
    [
        (["config.json", "pytorch_model.bin", "tf_model.h5", "vocab.txt"], ["pytorch_model.bin"]),
        (["config.json", "pytorch_model.bin", "model.safetensors"], ["model.safetensors"]),
        (["model.safetensors.index.json", "model-00001-of-00002.safetensors", "pytorch_model.bin"],
         ["model.safetensors.index.json", "model-*-of-*.safetensors"]),
        (["pytorch_model.bin.index.json", "pytorch_model-00001-of-00003.bin"],
         ["pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"]),
        (["bert_config.json", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "vocab.txt"],
         ["bert_model.ckpt.*", "bert_config.json"]),
        (["config.json", "tf_model.h5", "flax_model.msgpack"], []),
    ],
)  # fmt: skip
def test_one_weight_format_is_downloaded(files: list[str], patterns: list[str]) -> None:
    assert weight_patterns(files) == patterns


# ---------------------------------------------------------------------------------------------
# The hub, online: a local HTTP server speaking the few hub routes huggingface_hub uses


class _FakeHub:
    """Serves one repo (``files`` at ``commit``) on the routes snapshot_download calls:
    ``/api/models/{repo}/revision/{rev}``, ``/api/models/{repo}/tree/{rev}``,
    ``HEAD|GET /{repo}/resolve/{commit}/{file}``. Records every path requested."""

    def __init__(self, repo_id: str, files: dict[str, bytes]) -> None:
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.repo_id, self.files, self.requests = repo_id, files, []
        self.commit = hashlib.sha1(b"".join(sorted(files.values()))).hexdigest()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def _error(self, code: str) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _route(self) -> None:
                path = self.path.split("?", 1)[0]
                hub.requests.append(f"{self.command} {path}")
                api = f"/api/models/{hub.repo_id}/"
                if path.startswith("/api/models/") and not (path + "/").startswith(api):
                    return self._error("RepoNotFound")
                if path.startswith(api + "revision/") and path.rsplit("/", 1)[1] not in ("main", hub.commit):
                    return self._error("RevisionNotFound")
                if path == api.rstrip("/") or path.startswith(api + "revision/"):
                    info = {"id": hub.repo_id, "sha": hub.commit, "siblings": [{"rfilename": f} for f in hub.files]}
                    return self._reply(json.dumps(info).encode(), "application/json")
                if path.startswith(api + "tree/"):
                    tree = [{"type": "file", "path": f, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                            for f, data in hub.files.items()]  # fmt: skip
                    return self._reply(json.dumps(tree).encode(), "application/json")
                prefix = f"/{hub.repo_id}/resolve/{hub.commit}/"
                name = path.removeprefix(prefix)
                if path.startswith(prefix) and name in hub.files:
                    data = hub.files[name]
                    etag = f'"{hashlib.sha256(data).hexdigest()}"'
                    return self._reply(data, "application/octet-stream", {"X-Repo-Commit": hub.commit, "ETag": etag})
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = _route

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_online_download_takes_one_weight_format(tiny_checkpoint, monkeypatch, tmp_path: Path) -> None:
    bin_dir = tiny_checkpoint(head="pretraining", fmt="bin", seed=4)
    st_dir = tiny_checkpoint(head="pretraining", fmt="safetensors", seed=4)
    files = {p.name: p.read_bytes() for p in bin_dir.iterdir()}
    files["model.safetensors"] = (st_dir / "model.safetensors").read_bytes()
    files["tf_model.h5"] = b"not needed"
    files["README.md"] = b"# card"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with _FakeHub("google/multiberts-seed_2-step_40k", files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        checkpoint = load_checkpoint(resolve("seed_2 step_40k"))
        fetched = {r.rsplit("/", 1)[1] for r in hub.requests if r.startswith("GET") and "/resolve/" in r}
        with pytest.raises(SourceNotFoundError, match="google/multiberts-seed_9 does not exist on the hub"):
            fetch("google/multiberts-seed_9")
        with pytest.raises(SourceNotFoundError, match="has no revision 'nope'"):
            fetch("google/multiberts-seed_2-step_40k", "nope")
    assert fetched == {"config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "model.safetensors"}
    _assert_weights_equal(checkpoint.weights, _state_dict(bin_dir))

    # Now cached: offline works without the server.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = load_checkpoint(resolve("seed_2 step_40k"))
    assert again.weights_sha256 == checkpoint.weights_sha256
