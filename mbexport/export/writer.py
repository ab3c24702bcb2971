"""Atomic export directories: stage in a temp dir beside the target, then swap it in.

A convert that fails, is interrupted or is killed (-9) never damages an existing
export: the new one is built and verified in ``.NAME.tmp-*`` and only then renamed
into place by an atomic exchange (or, where the OS has none, two renames whose gap
readers bridge and the next convert repairs). Only an export is ever replaced, never a
directory holding anything else. An advisory lock (``.NAME.lock``, removed when done)
stops two converts writing the same directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import functools
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx
from onnx import helper

from mbexport import jsonfiles
from mbexport.errors import CheckpointFormatError, ExportDirError, ExportError, ExportLockedError
from mbexport.export.build import BuiltModel
from mbexport.layout import (
    CARRIED,
    CONFIG,
    EXPORT_FILES,
    EXTERNAL_DATA,
    MODEL,
    PACKED_MODEL,
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG,
    VOCAB,
    backup_dirs,
    read_manifest,
)
from mbexport.sources.tokenizer_json import read_tokenizer_json
from mbexport.spec import Checkpoint, sha256_files

# Protobuf caps a message at 2 GiB; beyond this weights go to model.onnx.data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# tokenizer_config.json keys that a tokenizer.json source decides (not guessed from the vocab).
_NORMALISER_OPTIONS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars")


@contextmanager
def export_lock(out: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``out`` for the whole convert (released on any exit, even kill).

    The holder deletes the lock file before releasing it, so no ``.lock`` is left behind; a
    convert that opened the file just before the deletion re-checks after locking that it
    holds the file still at the path, and otherwise locks the new one.
    """
    lock_path = out.parent / f".{out.name}.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle = _lock(lock_path, out)
    except OSError as e:
        raise ExportError(f"cannot write the export {out}: {e.strerror} ({e.filename}); "
                          "choose a writable --out") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        handle.close()  # releases the lock


def _lock(lock_path: Path, out: Path) -> IO[str]:
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 (closed by export_lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ExportLockedError(f"another mbexport convert is writing {out} (lock {lock_path}); "
                                    "wait for it or choose another --out") from None
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        held = os.fstat(handle.fileno())
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            return handle
        handle.close()  # the previous holder deleted it after we opened it


def recover(out: Path) -> None:
    """Under the lock: restore an export moved aside by a convert killed mid-swap; drop stale temp dirs."""
    backups = backup_dirs(out)
    if backups and not out.exists():
        backups.pop().rename(out)
    for stale in [*backups, *out.parent.glob(f".{out.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def check_replaceable(out: Path) -> None:
    """Refuse to replace anything but an mbexport export: a user's folder, or an export with files added."""
    if not (out.exists() or out.is_symlink()):
        return
    problem = _not_replaceable(out)
    if problem:
        raise ExportError(f"refusing to replace {out}: it is not an mbexport export ({problem}); "
                          "choose another --out or move it away")


def _carried(out: Path, entry: Path, carried: set[str]) -> bool:
    """Whether ``entry`` is one of the source files the export's manifest says it copied (modules.json, or a
    module directory such as 1_Pooling/ holding exactly the files it lists): replacing those loses nothing."""
    if entry.is_file():
        return entry.name in carried
    return entry.is_dir() and all(
        p.is_file() and not p.is_symlink() and p.relative_to(out).as_posix() in carried for p in entry.iterdir())


def _not_replaceable(out: Path) -> str | None:
    if out.is_symlink() or not out.is_dir():
        return "not a directory"
    entries = list(out.iterdir())
    if not entries:
        return None
    manifest: dict[str, Any] | None = None
    problem = ""
    try:
        manifest = read_manifest(out)
    except ExportDirError as e:
        problem = str(e)
    carried = set(manifest.get(CARRIED, [])) if manifest else set()
    foreign = sorted(p.name for p in entries if p.is_symlink() or not (
        (p.name in EXPORT_FILES and p.is_file()) or _carried(out, p, carried)))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds files an export does not write: {', '.join(foreign[:3])}{more}"
    if manifest is None:
        return problem
    unlisted = [name for name in manifest["files"] if not (out / name).is_file()]
    return f"its manifest lists missing files: {', '.join(unlisted)}" if unlisted else None


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh temp dir beside ``out`` (same filesystem, so the final rename is atomic); removed on failure."""
    # Not mkdtemp: its 0700 would make every export private; os.mkdir honours the umask.
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def commit(staging: Path, out: Path) -> None:
    """Swap ``staging`` into ``out``; the old export, if any, is removed.

    Where the OS can exchange two paths atomically (Linux renameat2), ``out`` is an intact
    export at every instant. Elsewhere the old export is renamed aside, then the new one in:
    a reader that finds ``out`` missing in between reads the one aside (``resolve_export_dir``)
    and a convert killed there is repaired by the next one (``recover``).
    """
    _fsync_tree(staging)
    if out.exists() and _exchange(staging, out):
        _fsync_dir(out.parent)
        shutil.rmtree(staging, ignore_errors=True)  # now the old export
        return
    backup = None
    if out.exists():
        backup = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
        out.rename(backup)
    staging.rename(out)
    _fsync_dir(out.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b``; False where the OS or filesystem cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def write_model(built: BuiltModel, directory: Path, name: str = MODEL) -> dict[Path, str]:
    """Write ``model.onnx`` (``name``), and ``model.packed.onnx`` for the packed flavor, and return each
    written file's sha256.

    Weights are streamed from their numpy arrays into the file: protobuf merges repeated
    occurrences of a message field, so the serialized skeleton followed by one
    ``ModelProto{graph{initializer: t}}`` fragment per tensor parses as one model. That
    avoids three in-memory copies of the weights (TensorProto, graph, serialized bytes).
    Models past protobuf's 2 GiB limit go through onnx's external-data writer instead.
    """
    if built.packed is not None:
        return {**write_model(dataclasses.replace(built, packed=None), directory, name),
                **write_model(built.packed, directory, PACKED_MODEL)}
    path = directory / name
    if sum(array.nbytes for _, array in built.initializers) > EXTERNAL_DATA_THRESHOLD:
        if name != MODEL:  # one external-data file per export
            raise ExportError(f"{name}: weights over {EXTERNAL_DATA_THRESHOLD} bytes need external data, which only "
                              f"{MODEL} may use; use --flavor fused for a model this large")
        onnx.save_model(built.model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA, size_threshold=1024)
        return {p: sha256_files([p]) for p in (path, directory / EXTERNAL_DATA)}
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        def put(data: bytes | memoryview) -> None:
            f.write(data)
            digest.update(data)

        put(built.skeleton.SerializeToString())
        for name, array in built.initializers:
            header = onnx.TensorProto(name=name, dims=array.shape,
                                      data_type=helper.np_dtype_to_tensor_dtype(array.dtype)).SerializeToString()
            tensor_len = len(header) + 1 + len(_varint(array.nbytes)) + array.nbytes
            graph_len = 1 + len(_varint(tensor_len)) + tensor_len
            put(_MODEL_GRAPH + _varint(graph_len) + _GRAPH_INITIALIZER + _varint(tensor_len) + header
                + _TENSOR_RAW_DATA + _varint(array.nbytes))
            put(memoryview(np.ascontiguousarray(array).data).cast("B"))  # little-endian, as ONNX raw_data is
    return {path: digest.hexdigest()}


# Protobuf tags (field number << 3 | wire type 2, length-delimited) of the fields written by hand.
_MODEL_GRAPH = bytes([7 << 3 | 2])  # ModelProto.graph
_GRAPH_INITIALIZER = bytes([5 << 3 | 2])  # GraphProto.initializer
_TENSOR_RAW_DATA = bytes([9 << 3 | 2])  # TensorProto.raw_data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def write_tokenizer_files(checkpoint: Checkpoint, config: dict[str, Any], directory: Path) -> None:
    """config.json, vocab.txt, tokenizer_config.json and special_tokens_map.json, loadable by HF AutoTokenizer,
    and the source's sentence-transformers files in their own layout."""
    write_json(directory / CONFIG, config)
    tokenizer_config = _read_optional_json(checkpoint.tokenizer_files.get(TOKENIZER_CONFIG))
    extracted = None
    if checkpoint.vocab_file.name == "tokenizer.json":  # a tokenizer.json-only source: its options are the truth
        extracted = read_tokenizer_json(checkpoint.vocab_file)
        (directory / VOCAB).write_text(extracted.vocab_text(), encoding="utf-8")
        for key, value in extracted.tokenizer_config().items():
            tokenizer_config[key] = value if key in _NORMALISER_OPTIONS else tokenizer_config.get(key, value)
    else:
        shutil.copyfile(checkpoint.vocab_file, directory / VOCAB)
    tokenizer_config.setdefault("do_lower_case", _vocab_is_uncased(directory / VOCAB))
    if checkpoint.embedding.lowercase and tokenizer_config["do_lower_case"] is not True:
        # sentence_bert_config's do_lower_case: sentence-transformers lowercases the text before a cased
        # tokenizer, whose accent stripping still follows its own (off) lowercasing.
        tokenizer_config["do_lower_case"] = True
        if tokenizer_config.get("strip_accents") is None:
            tokenizer_config["strip_accents"] = False
    tokenizer_config.setdefault("model_max_length", checkpoint.spec.max_position_embeddings)
    tokenizer_config.setdefault("tokenizer_class", "BertTokenizer")
    write_json(directory / TOKENIZER_CONFIG, tokenizer_config)
    specials = _read_optional_json(checkpoint.tokenizer_files.get(SPECIAL_TOKENS_MAP)) or (
        extracted.specials if extracted is not None else {"unk_token": "[UNK]", "sep_token": "[SEP]",
                                                          "pad_token": "[PAD]", "cls_token": "[CLS]",
                                                          "mask_token": "[MASK]"})
    write_json(directory / SPECIAL_TOKENS_MAP, specials)
    for name, path in checkpoint.st_files.items():  # sentence-transformers' modules.json, 1_Pooling/ ...
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, directory / name)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _read_optional_json(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    return jsonfiles.read_object(path, CheckpointFormatError, "fix or delete it")


def _vocab_is_uncased(vocab_file: Path) -> bool:
    """A vocab without upper-case word pieces (specials aside) belongs to an uncased model."""
    with open(vocab_file, encoding="utf-8") as f:
        return not any(t.strip() != t.strip().lower() for t in f if not t.startswith("["))


def _fsync_tree(root: Path) -> None:
    for path in root.iterdir():
        if path.is_dir():  # 1_Pooling/ and the like
            _fsync_tree(path)
            continue
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
