"""TensorFlow's checkpoint V2 format (TensorBundle), read without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` plus ``PREFIX.data-SSSSS-of-NNNNN`` shards::

    PREFIX.index     LevelDB-style sorted table (tensorflow/core/lib/io/table_*):
                     [data block]* [metaindex block] [index block] [footer: 48 bytes]
                     block   = entries, uint32 restart offsets, uint32 restart count,
                               then a 5-byte trailer: compression type (0 = none) and
                               masked CRC32C of block + type byte
                     entry   = varint shared, varint unshared, varint value length,
                               key suffix (prefix-compressed against the previous key), value
                     footer  = BlockHandle metaindex, BlockHandle index (varint offset, size),
                               zero padding to 40 bytes, fixed64 magic 0xdb4775248b80fb57
    key ""           BundleHeaderProto  {1: num_shards, 2: endianness, 3: version}
    key tensor name  BundleEntryProto   {1: dtype, 2: shape, 3: shard_id, 4: offset,
                                         5: size, 6: fixed32 masked CRC32C of the bytes,
                                         7: slices (partitioned variables)}
    PREFIX.data-*    raw tensor bytes at (offset, size), memory-mapped here

The few protobuf fields are decoded by hand. Every block and every tensor is checked
against its CRC32C; a mismatch, a truncated file or a missing shard raises
``CheckpointFormatError`` naming the file and the tensor.

The CRC32C itself is ``mbexport.sources.crc``'s.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbexport.errors import CheckpointFormatError, SourceNotFoundError
from mbexport.sources.crc import crc32c, mask_crc, unmask_crc

__all__ = ["DTYPE_NAMES", "BundleReader", "TensorEntry", "crc32c", "mask_crc", "unmask_crc"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # 2 BlockHandles of at most 10+10 varint bytes, padded to 40, + 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + fixed32 masked CRC
# An index holds about a hundred bytes per tensor (BERT-large's, optimizer slots included, is under 1 MiB); one
# past this is refused before it is read.
MAX_INDEX_BYTES = 256 << 20

# --------------------------------------------------------------------------------------
# Protobuf wire format: just enough for BundleHeaderProto / BundleEntryProto.


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _proto_fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) pairs: ints for varint/fixed fields, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("fixed64 runs past the end")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("length-delimited field runs past the end")
            value = bytes(buf[pos: pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("fixed32 runs past the end")
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# TensorFlow DataType enum (types.proto) -> numpy dtype / name. bfloat16 is read as uint16
# bits and widened by the caller; strings have their own layout.
DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
    19: "float16", 20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}  # fmt: skip
_NUMPY_DTYPES = {
    1: "f4", 2: "f8", 3: "i4", 4: "u1", 5: "i2", 6: "i1", 8: "c8", 9: "i8", 10: "b1", 14: "u2",
    17: "u2", 18: "c16", 19: "f2", 22: "u4", 23: "u8",
}  # fmt: skip
_DT_STRING = 7


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's BundleEntryProto: where its bytes are and what they hold."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored; None when the writer stored none
    sliced: bool = False  # a partitioned variable (its bytes live under slice keys)

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, f"DataType({self.dtype})")


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for field, value in _proto_fields(buf):
        if field == 2:
            size = 0
            for dim_field, dim_value in _proto_fields(value):
                if dim_field == 1:
                    size = _signed64(dim_value)
            dims.append(size)
        elif field == 3 and value:
            raise ValueError("shape has unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    values: dict[str, Any] = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None,
                              "sliced": False}
    for field, value in _proto_fields(buf):
        if field == 1:
            values["dtype"] = value
        elif field == 2:
            values["shape"] = _parse_shape(value)
        elif field == 3:
            values["shard_id"] = value
        elif field == 4:
            values["offset"] = value
        elif field == 5:
            values["size"] = value
        elif field == 6:
            values["crc32c"] = value
        elif field == 7:
            values["sliced"] = True
    return TensorEntry(name=name, **values)


# --------------------------------------------------------------------------------------
# The sorted table (.index file).


def _read_table(path: Path, data: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table, every block's CRC checked."""

    def corrupt(detail: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{path}: not a valid TensorFlow checkpoint index ({detail}); "
                                     "re-download or re-save the checkpoint")

    if len(data) < FOOTER_SIZE:
        raise corrupt(f"{len(data)} bytes, shorter than the {FOOTER_SIZE}-byte footer")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != TABLE_MAGIC:
        raise corrupt(f"wrong magic number {magic:#018x}, expected {TABLE_MAGIC:#018x}")
    try:
        _meta_offset, pos = _varint(footer, 0)
        _meta_size, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, pos = _varint(footer, pos)
    except ValueError as e:
        raise corrupt(f"footer: {e}") from None

    def block(offset: int, size: int, what: str) -> bytes:
        end = offset + size + BLOCK_TRAILER_SIZE
        if end > len(data) - FOOTER_SIZE:
            raise corrupt(f"{what} at {offset}+{size} runs past the end of the file")
        contents = data[offset: offset + size]
        kind = data[offset + size]
        (stored,) = struct.unpack_from("<I", data, offset + size + 1)
        actual = crc32c(data[offset: offset + size + 1])
        if unmask_crc(stored) != actual:
            raise corrupt(f"CRC mismatch in {what} at offset {offset}: stored {unmask_crc(stored):#010x}, "
                          f"computed {actual:#010x}")
        if kind != 0:
            raise corrupt(f"{what} is compressed (type {kind}); only uncompressed tables are read")
        return contents

    def entries(contents: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
        if len(contents) < 4:
            raise corrupt(f"{what} is shorter than its restart count")
        (restarts,) = struct.unpack_from("<I", contents, len(contents) - 4)
        limit = len(contents) - 4 * (restarts + 1)
        if limit < 0:
            raise corrupt(f"{what} claims {restarts} restart points")
        pos, key = 0, b""
        try:
            while pos < limit:
                shared, pos = _varint(contents, pos)
                unshared, pos = _varint(contents, pos)
                length, pos = _varint(contents, pos)
                if shared > len(key) or pos + unshared + length > limit:
                    raise ValueError("entry runs past the block")
                key = key[:shared] + contents[pos: pos + unshared]
                pos += unshared
                yield key, contents[pos: pos + length]
                pos += length
        except ValueError as e:
            raise corrupt(f"{what}: {e}") from None

    pairs: list[tuple[bytes, bytes]] = []
    index = block(index_offset, index_size, "index block")
    for _, handle in entries(index, "index block"):
        try:
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
        except ValueError:
            raise corrupt("bad block handle in the index block") from None
        pairs.extend(entries(block(offset, size, "data block"), f"data block at {offset}"))
    return pairs


def _open_shard(path: Path) -> mmap.mmap | bytes:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class BundleReader:
    """Read-only access to a TensorBundle: ``entries`` (from the index), ``view``/``read`` (from the data).

    ``view`` returns a read-only array over the memory-mapped shard, valid until ``close``;
    ``read`` returns a copy. Both check the tensor's CRC32C first. Use as a context manager.
    """

    def __init__(self, prefix: Path | str) -> None:
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        try:
            with open(self.index_path, "rb") as f:
                data = f.read(MAX_INDEX_BYTES + 1)
        except FileNotFoundError:
            raise SourceNotFoundError(f"{self.index_path} does not exist: give the checkpoint prefix "
                                      "(e.g. .../bert_model.ckpt) or the directory holding it") from None
        if len(data) > MAX_INDEX_BYTES:
            raise CheckpointFormatError(f"{self.index_path}: over {MAX_INDEX_BYTES >> 20} MiB, more than any "
                                        "checkpoint's index holds; re-download or re-save the checkpoint")
        self.num_shards = 1
        self.big_endian = False
        self.entries: dict[str, TensorEntry] = {}
        for key, value in _read_table(self.index_path, data):
            try:
                if key == b"":
                    self._parse_header(value)
                    continue
                name = key.decode("utf-8")
                self.entries[name] = _parse_entry(name, value)
            except (ValueError, UnicodeDecodeError) as e:
                raise CheckpointFormatError(
                    f"{self.index_path}: entry {key[:80]!r} is not a valid BundleEntryProto ({e}); "
                    "re-download or re-save the checkpoint") from None
        self._shards: dict[int, mmap.mmap | bytes] = {}

    def _parse_header(self, value: bytes) -> None:
        for field, item in _proto_fields(value):
            if field == 1:
                self.num_shards = item
            elif field == 2:
                self.big_endian = item == 1

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for shard in self._shards.values():
            if isinstance(shard, mmap.mmap):
                with contextlib.suppress(BufferError):  # a view is still alive; the mapping goes when it does
                    shard.close()
        self._shards.clear()

    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def shard_paths(self) -> list[Path]:
        return [self.shard_path(i) for i in range(self.num_shards)]

    def check_shards(self) -> None:
        """Raise unless every data shard the header announces exists.

        The shard files are found by listing the directory once, so a header claiming 10^8
        shards costs that listing, not 10^8 paths."""
        present = {path.name for path in self.prefix.parent.iterdir() if path.is_file()}
        found = sum(self.shard_path(i).name in present for i in range(min(self.num_shards, len(present))))
        if found == self.num_shards:
            return
        shard_id = next(i for i in range(found + 1) if self.shard_path(i).name not in present)
        held = next((e.name for e in self.entries.values() if e.shard_id == shard_id), None)
        what = f"it holds tensor {held!r}" if held else "it holds no tensor, but the checkpoint lists it"
        raise CheckpointFormatError(f"{self.shard_path(shard_id)} is missing ({what}); copy every "
                                    f"{self.prefix.name}.data-*-of-{self.num_shards:05d} file")

    def _shard(self, entry: TensorEntry) -> mmap.mmap | bytes:
        shard = self._shards.get(entry.shard_id)
        if shard is None:
            path = self.shard_path(entry.shard_id)
            if entry.shard_id >= self.num_shards:
                raise CheckpointFormatError(f"{self.index_path}: tensor {entry.name!r} names shard {entry.shard_id} "
                                            f"of {self.num_shards}; the index is corrupt")
            try:
                shard = _open_shard(path)
            except FileNotFoundError:
                raise CheckpointFormatError(f"{path} is missing (it holds tensor {entry.name!r}); copy every "
                                            f"{self.prefix.name}.data-*-of-{self.num_shards:05d} file") from None
            self._shards[entry.shard_id] = shard
        return shard

    def raw(self, name: str) -> memoryview:
        """The tensor's bytes (a view into the mapped shard), bounds- and CRC-checked.

        The stored CRC covers the bytes as written, except for strings (see ``_read_strings``)."""
        entry = self.entries[name]
        if entry.sliced:
            raise CheckpointFormatError(f"{self.index_path}: tensor {name!r} is a partitioned variable; "
                                        "mbexport reads whole tensors only (re-save it unpartitioned)")
        shard = self._shard(entry)
        end = entry.offset + entry.size
        if end > len(shard):
            raise CheckpointFormatError(
                f"{self.shard_path(entry.shard_id)} is truncated: tensor {name!r} needs bytes "
                f"{entry.offset}..{end} but the file has {len(shard)}; re-download it")
        data = memoryview(shard)[entry.offset: end]
        if entry.dtype != _DT_STRING:
            self._check_crc(entry, crc32c(data))
        return data

    def _check_crc(self, entry: TensorEntry, actual: int) -> None:
        if entry.crc32c is not None and actual != unmask_crc(entry.crc32c):
            raise CheckpointFormatError(
                f"{self.shard_path(entry.shard_id)}: CRC mismatch in tensor {entry.name!r} (stored "
                f"{unmask_crc(entry.crc32c):#010x}, computed {actual:#010x}); the file is corrupt, re-download it")

    def view(self, name: str) -> np.ndarray:
        """A read-only numpy view of a numeric tensor (bfloat16 as its uint16 bits)."""
        entry = self.entries[name]
        code = _NUMPY_DTYPES.get(entry.dtype)
        if code is None:
            raise CheckpointFormatError(f"{self.index_path}: tensor {name!r} has dtype {entry.dtype_name}, "
                                        "which mbexport does not read")
        dtype = np.dtype((">" if self.big_endian else "<") + code)
        count = math.prod(entry.shape)
        if any(d < 0 for d in entry.shape) or count * dtype.itemsize != entry.size:
            raise CheckpointFormatError(
                f"{self.index_path}: tensor {name!r} has shape {list(entry.shape)} ({entry.dtype_name}) but "
                f"{entry.size} bytes; the index is corrupt")
        data = self.raw(name)
        return np.frombuffer(data, dtype=dtype, count=count).reshape(entry.shape)

    def read(self, name: str) -> np.ndarray:
        """A tensor as a fresh numpy array: numbers in native byte order (bfloat16 widened to
        float32), strings as an object array of bytes."""
        entry = self.entries[name]
        if entry.dtype == _DT_STRING:
            return self._read_strings(entry)
        array = self.view(name)
        if entry.dtype == 14:
            return widen_bfloat16(array)
        return array.astype(array.dtype.newbyteorder("="), copy=True)

    def _read_strings(self, entry: TensorEntry) -> np.ndarray:
        # [varint64 length]*n [fixed32 masked CRC of the lengths] [bytes]*n; the entry's CRC is
        # taken over each length as a little-endian uint32 (uint64 past 4 GiB), the masked
        # length CRC, then the strings (TF's WriteStringTensor).
        data = bytes(self.raw(entry.name))
        count = math.prod(entry.shape)
        pos, lengths = 0, []
        try:
            for _ in range(count):
                length, pos = _varint(data, pos)
                lengths.append(length)
        except ValueError:
            raise CheckpointFormatError(f"{self.index_path}: string tensor {entry.name!r} is corrupt") from None
        crc = 0
        for length in lengths:
            crc = crc32c(struct.pack("<I" if length <= 0xFFFFFFFF else "<Q", length), crc)
        crc = crc32c(data[pos: pos + 4], crc)
        pos += 4
        out = np.empty(count, dtype=object)
        for i, length in enumerate(lengths):
            out[i] = data[pos: pos + length]
            crc = crc32c(out[i], crc)
            pos += length
        self._check_crc(entry, crc)
        return out.reshape(entry.shape)

    def __iter__(self) -> Iterator[TensorEntry]:
        return iter(self.entries.values())


def widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 stored as uint16 bits -> float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
