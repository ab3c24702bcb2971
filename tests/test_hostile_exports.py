"""Hostile exports and outputs (issue 9): data loss, swaps, tampering, malformed files, full or read-only disks.

Each case runs through the Python API and, where a user meets it, through the real console
script: one ``error:`` line on stderr, a non-zero exit, no traceback, and nothing deleted or
half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, assert_one_line_error, run_mbexport, write_tiny_checkpoint

from mbexport import Embedder
from mbexport.errors import ArgumentError, ExportDirError, ExportError, MbexportError, OutputFileError
from mbexport.export import writer
from mbexport.layout import read_manifest
from mbexport.runtime.files import AtomicOutput
from mbexport.runtime.pooling import pool


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "base", head="base", fmt="safetensors")


@pytest.fixture(scope="module")
def tiny_export(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mbexport.converter import convert

    return convert(str(tiny_ckpt), out=tmp_path_factory.mktemp("exp") / "tiny", head="base", parity=False)


@pytest.fixture
def export(tiny_export: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny export for a test to damage."""
    return Path(shutil.copytree(tiny_export, tmp_path / "export"))


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own $MBEXPORT_HOME (the verified-model cache lives there), in-process and for the CLI."""
    home = tmp_path / "mbhome"
    monkeypatch.setenv("MBEXPORT_HOME", str(home))
    return home


def tree(directory: Path) -> dict[str, str]:
    """Every entry under ``directory`` (hidden ones too) with its content hash."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


def rewrite_file(export: Path, name: str, data: bytes) -> None:
    """Replace ``name`` and record it in the manifest as if convert had written it (passes the sha256 check)."""
    (export / name).write_bytes(data)
    manifest = json.loads((export / "mbexport.json").read_text())
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (export / "mbexport.json").write_text(json.dumps(manifest))


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A directory nobody can create files in: a read-only tmpfs as root (chmod does not stop root), else 0555."""
    path.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


def small_file_limit(limit: int = 20_000):
    """preexec_fn: writes past ``limit`` bytes fail with EFBIG (a full disk, for every user; Python ignores SIGXFSZ)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


# -- 6. data loss: only an export is ever replaced --------------------------------------------


@pytest.mark.parametrize("extra", ["thesis.tex", "subdir/notes.txt"])
def test_directory_with_a_manifest_and_user_files_is_never_replaced(tiny_ckpt: Path, export: Path, tmp_path: Path,
                                                                    extra: str) -> None:
    """Old code replaced any directory holding an mbexport.json, deleting the user's other files."""
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(export / "mbexport.json", mine / "mbexport.json")
    (mine / extra).parent.mkdir(exist_ok=True)
    (mine / extra).write_text("precious")
    before = tree(tmp_path)
    result = run_mbexport("convert", str(tiny_ckpt), "--out", str(mine), "--no-parity")
    assert_one_line_error(result, "refusing to replace", str(mine), extra.split("/")[0])
    assert tree(tmp_path) == before  # nothing deleted, no lock, no staging dir left
    (export / extra).parent.mkdir(exist_ok=True)  # an export the user added a file to
    (export / extra).write_text("precious")
    with pytest.raises(ExportError, match="does not write"):
        writer.check_replaceable(export)


def test_only_a_valid_manifest_makes_a_directory_replaceable(export: Path) -> None:
    writer.check_replaceable(export)  # a real export: replaceable
    (export / "mbexport.json").write_text("{}")
    with pytest.raises(ExportError, match="not an mbexport export"):
        writer.check_replaceable(export)
    (export / "mbexport.json").unlink()
    with pytest.raises(ExportError, match="not an mbexport export"):
        writer.check_replaceable(export)


def test_target_exists_at_every_instant_of_a_commit(export: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader racing the swap always finds an intact export: checked right after every rename the commit
    makes (old code: between its two renames --out did not exist) and by a poller thread."""
    seen: list[str] = []
    real_rename = Path.rename

    def rename_then_read(self: Path, target: Path) -> Path:
        moved = real_rename(self, target)
        try:
            seen.append(read_manifest(export)["head"])
        except ExportDirError as e:
            seen.append(f"missing: {e}")
        return moved

    monkeypatch.setattr(Path, "rename", rename_then_read)
    stop = threading.Event()
    polled: list[bool] = []

    def poll() -> None:
        while not stop.is_set():
            polled.append((export / "mbexport.json").is_file())

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for _ in range(20):
            staging = tmp_path / f".{export.name}.tmp-test"
            shutil.copytree(export, staging)
            writer.commit(staging, export)
    finally:
        stop.set()
        poller.join()
    assert all(head == "base" for head in seen), seen
    assert polled and all(polled)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_readers_fall_back_to_the_export_moved_aside(export: Path, tmp_path: Path) -> None:
    """A swap killed between its two renames (where no atomic exchange exists) leaves only .NAME.old-*:
    readers use it, and the next convert restores it."""
    want = Embedder(export).embed(["hello world"])
    aside = export.parent / f".{export.name}.old-123-{time.time_ns()}"
    export.rename(aside)
    (export.parent / f".{export.name}.tmp-123-abcd").mkdir()  # the new one, never moved in
    assert read_manifest(export)["head"] == "base"
    np.testing.assert_array_equal(Embedder(export).embed(["hello world"]), want)
    result = run_mbexport("embed", str(export), "-", "--out", str(tmp_path / "o.npy"), input=b"hello world\n")
    assert result.returncode == 0, result.stderr.decode()
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), want, atol=1e-6)
    writer.recover(export)
    assert export.is_dir() and not aside.exists()


def test_two_rename_fallback_commit(export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where renameat2 is missing the commit still swaps (two renames) and leaves nothing behind."""
    monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    staging = tmp_path / f".{export.name}.tmp-x"
    shutil.copytree(export, staging)
    (staging / "config.json").write_text('{"marker": 1}')
    writer.commit(staging, export)
    assert json.loads((export / "config.json").read_text()) == {"marker": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- 10. lock files ------------------------------------------------------------------------------


def test_lock_file_is_removed_after_a_convert_and_a_refusal(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = run_mbexport("convert", str(tiny_ckpt), "--out", str(out), "--no-parity")
    assert result.returncode == 0, result.stderr.decode()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.txt").write_text("mine")
    refused = run_mbexport("convert", str(tiny_ckpt), "--out", str(tmp_path / "mine"), "--no-parity")
    assert_one_line_error(refused, "refusing to replace")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_lock_is_exclusive_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    lock = tmp_path / ".exp.lock"
    with writer.export_lock(out):
        assert lock.exists()
        with pytest.raises(ExportError, match="another mbexport convert"), writer.export_lock(out):
            pass
        assert lock.exists()  # the refused one did not remove the holder's lock
    assert not lock.exists()
    with writer.export_lock(out):  # and it can be taken again
        assert lock.exists()
    assert not lock.exists()


# -- 8. tampered exports -------------------------------------------------------------------------


def test_swapped_model_is_refused_even_with_the_old_size_and_mtime(export: Path, tiny_export: Path, tmp_path: Path,
                                                                    private_home: Path) -> None:
    from mbexport.converter import convert

    Embedder(export)  # verified once: cached in $MBEXPORT_HOME
    assert (private_home / "verified.json").is_file()
    other = convert(str(write_tiny_checkpoint(tmp_path / "seed1", head="base", fmt="safetensors", seed=1)),
                    out=tmp_path / "other", head="base", parity=False)
    model = export / "model.onnx"
    model.write_bytes((other / "model.onnx").read_bytes())  # another model in its place
    with pytest.raises(ExportDirError, match=r"model.onnx is \d+ bytes but the manifest says"):
        Embedder(export)
    shutil.copy(tiny_export / "model.onnx", model)
    Embedder(export)
    st = model.stat()
    data = bytearray(model.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # a weight changed in place: same size
    model.write_bytes(bytes(data))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime restored
    with pytest.raises(ExportDirError, match=r"model.onnx does not match its manifest .*re-run mbexport convert"):
        Embedder(export)
    result = run_mbexport("embed", str(export), "-", "--out", str(tmp_path / "o.npy"), input=b"hi\n")
    assert_one_line_error(result, "model.onnx does not match its manifest")
    assert not (tmp_path / "o.npy").exists()


def test_verification_is_cached_outside_the_export(export: Path, tmp_path: Path, private_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache goes to $MBEXPORT_HOME, never beside the export (which may be read-only or shared), and an
    unwritable home only means hashing again."""
    before = tree(export)
    Embedder(export)
    assert tree(export) == before
    cache = json.loads((private_home / "verified.json").read_text())["verified"]
    assert len(cache) == 1 and str((export / "model.onnx").resolve()) in cache[0]
    with read_only_dir(tmp_path / "ro") as ro:
        monkeypatch.setenv("MBEXPORT_HOME", str(ro))
        result = run_mbexport("embed", str(export), "-", "--out", str(tmp_path / "o.npy"), input=b"ok\n")
        assert result.returncode == 0, result.stderr.decode()
    assert np.load(tmp_path / "o.npy").shape == (1, TINY_CONFIG["hidden_size"])


# -- 9. malformed exports, models and options (Python API and CLI) --------------------------------

MALFORMED = {
    "manifest not JSON": ("mbexport.json", b"{not json", "mbexport.json is not valid JSON"),
    "manifest a list": ("mbexport.json", b"[1, 2]", "manifest format None"),
    "manifest hidden a string": ("mbexport.json", "model.hidden", "model.hidden must be a positive integer"),
    "manifest outputs a string": ("mbexport.json", "outputs", "'outputs' must be a list"),
    "manifest files a list": ("mbexport.json", "files", "'files' must be a dict"),
    "tokenizer_config not JSON": ("tokenizer_config.json", b"{", "tokenizer_config.json"),
    "manifest nested too deeply": ("mbexport.json", b"[" * 100_000, "nested deeper than the JSON parser goes"),
    "tokenizer_config a list": ("tokenizer_config.json", b"[]", "tokenizer_config.json holds a JSON list"),
    "tokenizer_config nested too deeply": ("tokenizer_config.json", b'{"a": ' * 100_000, "tokenizer_config.json"),
    "special_tokens_map a list": ("special_tokens_map.json", b"[\"[UNK]\"]", "special_tokens_map.json holds a JSON list"),
    "garbage model.onnx": ("model.onnx", b"\x08\x07garbage" * 50, "onnxruntime could not load it"),
    "empty model.onnx": ("model.onnx", b"", "onnxruntime could not load it"),
    "vocab larger than the model": ("vocab.txt", None, "vocab.txt has 149 tokens but the model's embedding table has 99"),
}


def damage(export: Path, name: str, data: bytes | str | None) -> None:
    if name == "model.onnx":
        rewrite_file(export, name, data)  # type: ignore[arg-type]
    elif name == "vocab.txt":
        with open(export / "vocab.txt", "a", encoding="utf-8") as f:
            f.write("".join(f"extra{i}\n" for i in range(50)))
    elif isinstance(data, str):  # a manifest field of the wrong type
        manifest = json.loads((export / name).read_text())
        if data == "model.hidden":
            manifest["model"]["hidden"] = "36"
        else:
            manifest[data] = "x" if data == "outputs" else []
        (export / name).write_text(json.dumps(manifest))
    else:
        (export / name).write_bytes(data)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_exports_are_one_line_errors(export: Path, tmp_path: Path, case: str) -> None:
    name, data, needle = MALFORMED[case]
    damage(export, name, data)
    with pytest.raises(MbexportError, match=re.escape(needle)):
        Embedder(export)
    out = tmp_path / "o.npy"
    result = run_mbexport("embed", str(export), "-", "--out", str(out), input=b"hello\n")
    assert_one_line_error(result, needle)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


BAD_OPTIONS = [
    (["--max-length", "0"], "--max-length"), (["--max-length", "100000"], "max_length (--max-length)"),
    (["--batch-tokens", "1"], "batch_tokens (--batch-tokens)"), (["--pooling", "max"], "--pooling"),
    (["--device", "tpu"], "--device"), (["--threads", "0"], "--threads"), (["--threads", "x"], "--threads"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_embed_options_are_one_line_usage_errors(export: Path, tmp_path: Path, args: list[str],
                                                     needle: str) -> None:
    result = run_mbexport("embed", str(export), "-", "--out", str(tmp_path / "o.npy"), *args, input=b"x\n")
    assert_one_line_error(result, needle, code=2)


@pytest.mark.parametrize(("args", "needle"), [(["--precision", "int4"], "--precision"), (["--head", "foo"], "--head"),
                                              (["--flavor", "x"], "--flavor")])
def test_bad_convert_options_are_one_line_usage_errors(tiny_ckpt: Path, tmp_path: Path, args: list[str],
                                                       needle: str) -> None:
    result = run_mbexport("convert", str(tiny_ckpt), "--out", str(tmp_path / "o"), *args)
    assert_one_line_error(result, needle, code=2)
    assert list(tmp_path.iterdir()) == [] or [p.name for p in tmp_path.iterdir()] == ["mbhome"]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"pooling": "max"}, "pooling"), ({"device": "tpu"}, "device"), ({"threads": 0}, "threads"),
    ({"max_length": 0}, "max_length"), ({"max_length": 100000}, "max_length"), ({"batch_tokens": 1}, "batch_tokens"),
    ({"max_length": "16"}, "max_length"), ({"window": 0}, "window"),
])
def test_bad_embedder_arguments_raise_our_value_errors(export: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(ArgumentError, match=needle) as info:
        Embedder(export, **kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("content", "needle"), [(b"{oops", "not valid JSON"), (b"[1]", "not an object"),
                                                  (b"[" * 100_000, "nested deeper than the JSON parser goes")])
def test_malformed_checkpoint_tokenizer_config_is_refused(tiny_ckpt: Path, tmp_path: Path, content: bytes,
                                                          needle: str) -> None:
    ckpt = Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))
    (ckpt / "tokenizer_config.json").write_bytes(content)
    result = run_mbexport("convert", str(ckpt), "--out", str(tmp_path / "out"), "--no-parity")
    assert_one_line_error(result, "tokenizer_config.json", needle)
    assert not (tmp_path / "out").exists()


# -- 9. read-only and full disks ------------------------------------------------------------------


def test_convert_into_a_read_only_directory(tiny_ckpt: Path, tmp_path: Path) -> None:
    with read_only_dir(tmp_path / "ro") as ro:
        result = run_mbexport("convert", str(tiny_ckpt), "--out", str(ro / "exp"), "--no-parity")
        assert_one_line_error(result, "cannot write the export", "choose a writable --out")
        from mbexport.converter import convert

        with pytest.raises(ExportError, match="cannot write the export"):
            convert(str(tiny_ckpt), out=ro / "exp", parity=False)


def test_convert_onto_a_full_disk_keeps_the_old_export(tiny_ckpt: Path, export: Path) -> None:
    before = tree(export.parent / "export")
    result = run_mbexport("convert", str(tiny_ckpt), "--out", str(export), "--no-parity",
                          preexec_fn=small_file_limit())
    assert_one_line_error(result, "cannot write the export", "File too large")
    assert tree(export) == before
    assert sorted(p.name for p in export.parent.iterdir() if p.name.startswith(".")) == []


def test_embed_into_read_only_full_or_directory_outputs(export: Path, tmp_path: Path) -> None:
    texts = b"".join(f"text number {i}\n".encode() for i in range(2000))
    with read_only_dir(tmp_path / "ro") as ro:
        result = run_mbexport("embed", str(export), "-", "--out", str(ro / "o.npy"), input=b"x\n")
        assert_one_line_error(result, "cannot write", "o.npy")
        with pytest.raises(OutputFileError, match="cannot write"), AtomicOutput(ro / "o.npy", 4):
            pass
    full = tmp_path / "full.jsonl"
    result = run_mbexport("embed", str(export), "-", "--out", str(full), input=texts, preexec_fn=small_file_limit())
    assert_one_line_error(result, f"cannot write {full}: File too large")
    assert not full.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
    (tmp_path / "d.npy").mkdir()
    result = run_mbexport("embed", str(export), "-", "--out", str(tmp_path / "d.npy"), input=b"x\n")
    assert_one_line_error(result, "is a directory")
    if os.geteuid() == 0:  # ENOSPC itself, on a 64 KiB tmpfs (only root can mount; EFBIG above covers everyone)
        small = tmp_path / "small"
        small.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
        try:
            result = run_mbexport("embed", str(export), "-", "--out", str(small / "o.jsonl"), input=texts)
            assert_one_line_error(result, "No space left on device")
            assert list(small.iterdir()) == []
        finally:
            subprocess.run(["umount", str(small)], check=True)


# -- 10. output permissions, SIGTERM, JSON ids ----------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_embed_output_honours_the_umask(export: Path, tmp_path: Path, umask: int) -> None:
    out = tmp_path / "o.npy"
    result = run_mbexport("embed", str(export), "-", "--out", str(out), input=b"x\n",
                          preexec_fn=lambda: os.umask(umask))
    assert result.returncode == 0, result.stderr.decode()
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("what", ["embed", "convert"])
def test_sigterm_cleans_up_like_ctrl_c(export: Path, tiny_ckpt: Path, tmp_path: Path, what: str) -> None:
    """Old code died on SIGTERM leaving the hidden .partial (embed) or .tmp-* staging dir (convert)."""
    before = tree(export)
    if what == "embed":
        args, marker = ["embed", str(export), "-", "--out", str(tmp_path / "o.npy")], "partial"
    else:
        big = write_tiny_checkpoint(tmp_path / "big", head="base", fmt="safetensors",
                                    config={**TINY_CONFIG, "hidden_size": 384, "num_attention_heads": 6,
                                            "intermediate_size": 1536, "num_hidden_layers": 6})
        args, marker = ["convert", str(big), "--out", str(export)], ".tmp-"
    cli = "import sys; from mbexport.cli import main; sys.argv[0] = 'mbexport'; main()"
    proc = subprocess.Popen([sys.executable, "-c", cli, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    assert proc.stdin is not None
    if what == "embed":
        proc.stdin.write(b"a short text\n" * 5000)  # two windows written, then it waits for more
        proc.stdin.flush()
    deadline = time.monotonic() + 120
    while not any(marker in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1].decode()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(args, proc.returncode, b"", stderr)
    assert_one_line_error(result, "terminated", code=143)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert tree(export) == before


def refused_then_skipped(export: Path, tmp_path: Path, data: bytes, out_name: str, *needles: str) -> Path:
    """``mbexport embed`` of ``data`` as in.jsonl: refused in one line naming line 2 and ``needles`` (nothing
    written), then run with --skip-bad-lines. Returns the output file."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(data)
    out = tmp_path / out_name
    result = run_mbexport("embed", str(export), str(src), "--out", str(out))
    assert_one_line_error(result, "in.jsonl:2:", *needles, "--skip-bad-lines")
    assert not out.exists()
    result = run_mbexport("embed", str(export), str(src), "--out", str(out), "--skip-bad-lines")
    assert result.returncode == 0, result.stderr.decode()
    return out


def test_jsonl_ids_that_json_cannot_hold_are_refused(export: Path, tmp_path: Path) -> None:
    data = b'{"id": "a", "text": "x"}\n{"id": NaN, "text": "y"}\n{"id": 1.5, "text": "z"}\n{"id": -Infinity, "text": "w"}\n'
    out = refused_then_skipped(export, tmp_path, data, "o.jsonl", "NaN")

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} in the output")

    rows = [json.loads(line, parse_constant=strict) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", 1.5]


def test_jsonl_line_nested_too_deeply_is_a_bad_line(export: Path, tmp_path: Path) -> None:
    """JSON nested past the parser's depth is refused like any malformed line (named, skippable), not a crash."""
    data = b'{"text": "x"}\n' + b'{"text": ' * 100_000 + b'\n{"text": "y"}\n'
    out = refused_then_skipped(export, tmp_path, data, "o.npy", "nested deeper")
    np.testing.assert_allclose(np.load(out), Embedder(export).embed(["x", "y"]), atol=1e-6)


def test_non_finite_embeddings_never_reach_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    with pytest.raises(OutputFileError, match="id 'b' is not finite"), AtomicOutput(out, 2) as writer_:
        writer_.write(["a", "b"], np.array([[1, 2], [np.nan, 0]], dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


# -- 4 (runtime part). padding comes from the mask ------------------------------------------------


def test_mean_pooling_ignores_whatever_sits_at_padding() -> None:
    """Old code multiplied by the mask: 0 * NaN is NaN, so one poisoned padded position spoilt the row."""
    rng = np.random.default_rng(0)
    output = rng.standard_normal((3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=np.int64)
    output[0, 3] = np.nan
    output[0, 4] = np.inf
    output[2, 1:] = -np.inf
    want = np.stack([output[i, :n].mean(axis=0) for i, n in enumerate(mask.sum(axis=1))])
    got = pool(output, mask, "mean")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_an_export_carrying_sentence_transformers_files_is_replaced_and_nothing_else(minilm_dir: Path,
                                                                                      tmp_path: Path) -> None:
    """Old code refused to re-convert into its own export of a sentence-transformers model: the modules.json and
    1_Pooling/ it copies were not names an export writes. Now the manifest lists what it carried; a file of the
    user's beside them, or inside the module folder, still blocks the replacement."""
    out = tmp_path / "minilm"
    for _ in range(2):
        result = run_mbexport("convert", str(minilm_dir), "--out", str(out), "--no-parity")
        assert result.returncode == 0, result.stderr
    assert "1_Pooling/config.json" in read_manifest(out)["carried"]
    (out / "1_Pooling" / "notes.txt").write_text("precious")
    before = tree(tmp_path)
    result = run_mbexport("convert", str(minilm_dir), "--out", str(out), "--no-parity")
    assert_one_line_error(result, "refusing to replace", "1_Pooling")
    assert tree(tmp_path) == before
    manifest = json.loads((out / "mbexport.json").read_text())
    manifest["carried"] = ["../outside.txt"]
    (out / "mbexport.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportDirError, match="'carried' must be a list of relative file names"):
        read_manifest(out)
