"""Atomic export directories: stage in a temp dir beside the target, then swap it in.

A convert that fails, is interrupted or is killed (-9) never damages an existing
export: the new one is built and verified in ``.NAME.tmp-*`` and only then renamed
into place; the one window between moving the old export aside and the new one in
is repaired by the next convert (``recover``). An advisory lock (``.NAME.lock``)
stops two converts writing the same directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from mbexport.errors import ExportError, ExportLockedError
from mbexport.export.build import BuiltModel
from mbexport.spec import Checkpoint, sha256_files

MANIFEST = "mbexport.json"
MODEL = "model.onnx"
EXTERNAL_DATA = "model.onnx.data"
# Protobuf caps a message at 2 GiB; beyond this weights go to model.onnx.data.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


@contextmanager
def export_lock(out: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``out`` for the whole convert (released on any exit, even kill)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportLockedError(
                f"another mbexport convert is writing {out} (lock {lock_path}); wait for it or choose another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recover(out: Path) -> None:
    """Under the lock: restore an export moved aside by a convert killed mid-swap; drop stale temp dirs."""
    backups = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if backups and not out.exists():
        backups.pop().rename(out)
    for stale in [*backups, *out.parent.glob(f".{out.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def check_replaceable(out: Path) -> None:
    """Refuse to replace a directory that is not an mbexport export (a user's own folder)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise ExportError(f"refusing to replace {out}: it exists and is not an mbexport export; "
                          "choose another --out or remove it")


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
    """Swap ``staging`` into ``out``: old export aside, new one in, old one removed."""
    _fsync_tree(staging)
    backup = None
    if out.exists():
        backup = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
        out.rename(backup)
    staging.rename(out)
    _fsync_dir(out.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def write_model(built: BuiltModel, directory: Path) -> dict[Path, str]:
    """Write ``model.onnx`` and return each written file's sha256.

    Weights are streamed from their numpy arrays into the file: protobuf merges repeated
    occurrences of a message field, so the serialized skeleton followed by one
    ``ModelProto{graph{initializer: t}}`` fragment per tensor parses as one model. That
    avoids three in-memory copies of the weights (TensorProto, graph, serialized bytes).
    Models past protobuf's 2 GiB limit go through onnx's external-data writer instead.
    """
    path = directory / MODEL
    if sum(array.nbytes for _, array in built.initializers) > EXTERNAL_DATA_THRESHOLD:
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
            put(memoryview(np.ascontiguousarray(array)).cast("B"))  # little-endian, as ONNX raw_data is
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
    write_json(directory / "config.json", config)
    shutil.copyfile(checkpoint.vocab_file, directory / "vocab.txt")
    tokenizer_config = _read_optional_json(checkpoint.tokenizer_files.get("tokenizer_config.json"))
    tokenizer_config.setdefault("do_lower_case", _vocab_is_uncased(checkpoint.vocab_file))
    tokenizer_config.setdefault("model_max_length", checkpoint.spec.max_position_embeddings)
    tokenizer_config.setdefault("tokenizer_class", "BertTokenizer")
    write_json(directory / "tokenizer_config.json", tokenizer_config)
    specials = _read_optional_json(checkpoint.tokenizer_files.get("special_tokens_map.json")) or {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    write_json(directory / "special_tokens_map.json", specials)
    for name, path in checkpoint.st_files.items():  # sentence-transformers' modules.json, 1_Pooling/ ...
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, directory / name)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _read_optional_json(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


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
