"""``pytorch_model.bin`` -> ``dict[str, np.ndarray]`` without torch and without running the pickle.

A PyTorch checkpoint is a pickle, and unpickling can call any importable function. This
reader unpickles with an allow-list: it resolves only the handful of globals a saved state
dict uses, each to a stand-in made for this load alone (immutable, so nothing one file does
can change how the next is read); any other global (``os.system``, ``builtins.eval``, a model
class ...) raises ``UnsafeCheckpointError`` before anything runs. ``BUILD`` (setting an
object's state) is allowed only on the ``OrderedDict`` a state dict is, as torch.save writes it.

Both layouts torch.save has written are read:

- zip (torch >= 1.6)::

      <any top folder>/data.pkl        the pickled object; tensors refer to storages by key
      <any top folder>/data/<key>      raw little-endian bytes of storage <key>, stored uncompressed
      <any top folder>/byteorder       optional, "little" or "big"

- legacy: five pickles in a row (magic number, protocol version, sys_info, the object,
  the sorted storage keys), then for each key an int64 element count and the raw bytes.

A tensor is ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``: a strided view of
its storage, copied out here into a contiguous array. bfloat16 becomes float32 (numpy has
no bfloat16); everything else keeps its dtype.

Sizes are checked before anything is allocated: every storage's byte count against the
member or file that holds it, every tensor's extent against its storage, and all tensors
together against the storages (see ``_TIED_COPIES``), so a small file cannot ask for a
large amount of memory.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from mbexport.errors import CheckpointFormatError, UnsafeCheckpointError
from mbexport.spec import is_int

__all__ = ["load_torch_bin"]

# Storage classes torch pickles, by name -> numpy dtype. "bfloat16" is read as uint16 bits.
_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
# torch dtype objects, should a pickle name them (torch.float32 is pickled as torch.float32).
_TORCH_DTYPES: dict[str, Any] = {
    "float64": np.float64, "double": np.float64,
    "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16,
    "bfloat16": "bfloat16",
    "int64": np.int64, "long": np.int64,
    "int32": np.int32, "int": np.int32,
    "int16": np.int16, "short": np.int16,
    "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}  # fmt: skip

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Tensors may share a storage (tied weights: the MLM decoder is the word embeddings), so
# together they may copy out up to this many times the bytes of all storages, never more.
_TIED_COPIES = 2
# data.pkl holds ~150 bytes per tensor (BERT-large: ~60 KB); this is 400k tensors.
_MAX_PICKLE_BYTES = 64 << 20
_MAX_DIMS = 32  # numpy's limit in its 1.x series


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: only carries the element dtype."""

    name: str
    dtype: np.dtype
    bfloat16: bool

    @classmethod
    def of(cls, name: str, dtype: Any) -> _StorageType:
        bfloat16 = dtype == "bfloat16"
        return cls(name, np.dtype(np.uint16 if bfloat16 else dtype), bfloat16)


@dataclass(frozen=True)
class _DType:
    """Stand-in for a ``torch.dtype`` object."""

    name: str


@dataclass(frozen=True)
class _Storage:
    """A loaded storage: a flat, read-only numpy array of its element type."""

    key: str
    array: np.ndarray
    bfloat16: bool


class _Tensors:
    """One load's tensor rebuilding, holding what all its tensors may still copy out."""

    def __init__(self, path: Path, storage_bytes: int) -> None:
        self._path = path
        self._budget = _TIED_COPIES * storage_bytes

    def rebuild(self, storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> np.ndarray:
        """``torch._utils._rebuild_tensor_v2``: the strided view, copied out contiguous."""
        if not isinstance(storage, _Storage):
            raise UnsafeCheckpointError(f"{self._path}: tensor rebuilt from {type(storage).__name__}, not a storage")
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and is_int(storage_offset)
                and all(map(is_int, size + stride)) and len(size) == len(stride) <= _MAX_DIMS
                and min(size + stride + (storage_offset,)) >= 0):
            raise CheckpointFormatError(f"{self._path}: tensor on storage {storage.key} has a malformed layout "
                                        f"(offset {str(storage_offset)[:20]}, size {str(size)[:80]}, stride "
                                        f"{str(stride)[:80]}); the file is corrupt")
        flat = storage.array
        count = math.prod(size)
        if count and storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) >= flat.size:
            raise CheckpointFormatError(f"{self._path}: tensor of size {list(size)} at offset {storage_offset} runs "
                                        f"past its storage {storage.key} of {flat.size} elements; the file is corrupt")
        nbytes = count * flat.itemsize
        if nbytes > flat.nbytes or nbytes > self._budget:
            raise CheckpointFormatError(f"{self._path}: tensor of size {list(size)} repeats the {flat.size} elements "
                                        f"of storage {storage.key} (strides {list(stride)}); a checkpoint's tensors "
                                        "cannot hold more than their storages, the file is corrupt or hostile")
        self._budget -= nbytes
        if count:
            view = np.lib.stride_tricks.as_strided(flat[storage_offset:], shape=size,
                                                   strides=tuple(s * flat.itemsize for s in stride), writeable=False)
            out = np.array(view, copy=True, order="C")
        else:
            out = np.zeros(size, dtype=flat.dtype)
        if storage.bfloat16:
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out

    def parameter(self, data: Any, *_: Any) -> np.ndarray:
        """``torch._utils._rebuild_parameter[_with_state]``: a Parameter is its data here."""
        if not isinstance(data, np.ndarray):
            raise UnsafeCheckpointError(f"{self._path}: parameter rebuilt from {type(data).__name__}, not a tensor")
        return data


def _allowed_globals(tensors: _Tensors) -> dict[tuple[str, str], Any]:
    """The globals a state dict may name, resolved to stand-ins made for one load."""
    return {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): tensors.rebuild,
        ("torch._utils", "_rebuild_tensor"): tensors.rebuild,
        ("torch._utils", "_rebuild_parameter"): tensors.parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): tensors.parameter,
        **{("torch", name): _StorageType.of(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
        **{("torch", name): _DType(name) for name in _TORCH_DTYPES},
    }


LoadStorage = Callable[[str, _StorageType, int], _Storage]


class _Clamped:
    """A file whose reads never ask for more than it holds, so no length field in a pickle
    can make a read allocate past the end of the file."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size

    def read(self, n: int = -1) -> bytes:
        remaining = max(0, self._size - self._file.tell())
        return self._file.read(remaining if n < 0 else min(n, remaining))

    def readline(self) -> bytes:
        return self._file.readline()


class _RestrictedUnpickler(pickle._Unpickler):
    """Resolves only allowed globals; storages come from ``load_storage``.

    The pure-Python unpickler, so that ``BUILD`` can be restricted and its memo is a dict
    (the C one sizes an array by the largest memo index a pickle names)."""

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    stack: list[Any]

    def __init__(self, file: BinaryIO | _Clamped, path: Path, load_storage: LoadStorage, tensors: _Tensors) -> None:
        super().__init__(file)
        self._path = path
        self._load_storage = load_storage
        self._globals = _allowed_globals(tensors)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._path}: refused to run pickle global {module}.{name}: a weights file should hold only "
                "tensors; do not load it with torch.load either, and get the checkpoint from a trusted source "
                "(or as model.safetensors)"
            ) from None

    def load_build(self) -> None:
        """``BUILD``: torch.save's OrderedDict carries its ``_metadata``; nothing else is built."""
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is not collections.OrderedDict or not isinstance(state, dict):
            raise UnsafeCheckpointError(
                f"{self._path}: refused to set the state of a {type(target).__name__} in the pickle: a weights "
                "file only builds its state dict; get the checkpoint from a trusted source (or as model.safetensors)")

    def load_bytearray8(self) -> None:
        raise UnsafeCheckpointError(f"{self._path}: the pickle holds a protocol-5 bytearray, which torch.save "
                                    "never writes; get the checkpoint from a trusted source")

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self._path}: unexpected persistent id {str(pid)[:80]!r} in the pickle")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if isinstance(storage_type, _DType):  # newer pickles may name a dtype instead of a storage class
            storage_type = _StorageType.of(storage_type.name, _TORCH_DTYPES[storage_type.name])
        if not isinstance(storage_type, _StorageType) or not is_int(numel) or numel < 0:
            raise UnsafeCheckpointError(f"{self._path}: malformed storage reference {str(pid)[:80]!r}")
        return self._load_storage(key, storage_type, numel)


def load_torch_bin(path: Path) -> dict[str, np.ndarray]:
    """Read a ``torch.save``d state dict into numpy arrays, refusing anything but tensors."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            obj = _load_zip(path)
        else:
            obj = _load_legacy(path)
    except (CheckpointFormatError, FileNotFoundError):
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError, KeyError,
            IndexError, TypeError, AttributeError, OverflowError, MemoryError) as e:  # fmt: skip
        raise CheckpointFormatError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}); re-download it"
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    weights: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            weights[str(name)] = value
    if not weights:
        raise CheckpointFormatError(f"{path}: holds no tensors")
    return weights


def _check_storage_bytes(path: Path, key: str, storage_type: _StorageType, numel: int, nbytes: int) -> None:
    if numel * storage_type.dtype.itemsize != nbytes:
        raise CheckpointFormatError(f"{path}: storage {key} holds {nbytes} bytes but the pickle says {numel} "
                                    f"{storage_type.name} elements; the file is corrupt, re-download it")


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pickles:
            raise CheckpointFormatError(f"{path}: a zip file without data.pkl is not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if f"{prefix}byteorder" in names:
            with archive.open(f"{prefix}byteorder") as f:
                big_endian = f.read(16).strip() == b"big"
        members = [info for info in archive.infolist() if info.filename.startswith(f"{prefix}data/")]
        # Storages are stored uncompressed, so together they are no larger than the file.
        tensors = _Tensors(path, min(sum(info.file_size for info in members), path.stat().st_size))
        storages: dict[str, _Storage] = {}

        def load_storage(key: str, storage_type: _StorageType, numel: int) -> _Storage:
            if key not in storages:
                try:
                    info = archive.getinfo(f"{prefix}data/{key}")
                except KeyError:
                    raise CheckpointFormatError(f"{path}: storage {key} is missing from the archive") from None
                _check_storage_bytes(path, key, storage_type, numel, info.file_size)
                dtype = storage_type.dtype.newbyteorder(">") if big_endian else storage_type.dtype
                array = _map_member(path, info, dtype)
                if big_endian:
                    array = array.astype(storage_type.dtype)
                storages[key] = _Storage(key, array, storage_type.bfloat16)
            return storages[key]

        info = archive.getinfo(pickles[0])
        if info.file_size > _MAX_PICKLE_BYTES:
            raise CheckpointFormatError(f"{path}: data.pkl claims {info.file_size} bytes, more than any state dict "
                                        f"needs ({_MAX_PICKLE_BYTES}); the file is corrupt or hostile")
        with archive.open(info) as f:
            data = f.read(_MAX_PICKLE_BYTES)
        return _RestrictedUnpickler(io.BytesIO(data), path, load_storage, tensors).load()


def _map_member(path: Path, info: zipfile.ZipInfo, dtype: np.dtype) -> np.ndarray:
    """A storage's elements, memory-mapped from the file: torch.save stores them uncompressed,
    so tensors are copied out of the file once, and a compressed member (which could inflate
    without bound) is refused."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointFormatError(f"{path}: storage member {info.filename} is compressed (zip method "
                                    f"{info.compress_type}); torch.save stores storages uncompressed, re-save the "
                                    "checkpoint with torch.save or as model.safetensors")
    count = info.file_size // dtype.itemsize
    if not count:
        return np.empty(0, dtype)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local_header = f.read(30)
        size = f.seek(0, io.SEEK_END)
    if len(local_header) < 30 or local_header[:4] != b"PK\x03\x04":
        raise CheckpointFormatError(f"{path}: member {info.filename} has no valid local header; re-download it")
    name_len, extra_len = struct.unpack("<HH", local_header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > size:
        raise CheckpointFormatError(f"{path}: truncated (storage {info.filename} runs past the end); re-download it")
    return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(count,))


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as raw:
        head = raw.read(2)
        if not head or head[0] != 0x80:
            raise CheckpointFormatError(
                f"{path}: neither a zip nor a legacy PyTorch checkpoint (tar-era files are not supported); re-save it "
                "with a recent torch or as model.safetensors"
            )
        size = raw.seek(0, io.SEEK_END)
        raw.seek(0)
        f = _Clamped(raw, size)
        no_tensors = _Tensors(path, 0)

        def no_storage(key: str, storage_type: _StorageType, numel: int) -> _Storage:
            raise CheckpointFormatError(f"{path}: storage reference in the header")

        def header() -> Any:
            return _RestrictedUnpickler(f, path, no_storage, no_tensors).load()

        if header() != _LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        if header() != _LEGACY_PROTOCOL:
            raise CheckpointFormatError(f"{path}: unsupported legacy PyTorch protocol version")
        sys_info = header()
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)

        # The object comes before the storages' bytes: unpickle it once to learn the storages
        # (tensors not rebuilt), find each storage in the file, then unpickle it again for real.
        object_start = raw.tell()
        refs: dict[str, tuple[_StorageType, int]] = {}

        def note(key: str, storage_type: _StorageType, numel: int) -> _Storage:
            refs.setdefault(key, (storage_type, numel))
            return _Storage(key, np.empty(0, storage_type.dtype), storage_type.bfloat16)

        class _Survey(_RestrictedUnpickler):
            def find_class(self, module: str, name: str) -> Any:
                found = super().find_class(module, name)
                return (lambda *_: np.empty(0)) if found == no_tensors.rebuild else found

        _Survey(f, path, note, no_tensors).load()
        keys = header()
        if not isinstance(keys, list):
            raise CheckpointFormatError(f"{path}: malformed storage key list")
        located: dict[str, tuple[_StorageType, int, int]] = {}
        for key in map(str, keys):
            (count,) = struct.unpack("<q" if little else ">q", raw.read(8))
            if key not in refs:
                raise CheckpointFormatError(f"{path}: storage {key} is not referenced by any tensor")
            storage_type, numel = refs[key]
            nbytes = count * storage_type.dtype.itemsize
            _check_storage_bytes(path, key, storage_type, numel, nbytes)
            if raw.tell() + nbytes > size:
                raise CheckpointFormatError(f"{path}: truncated (storage {key} is cut short); re-download it")
            located[key] = (storage_type, raw.tell(), count)
            raw.seek(nbytes, io.SEEK_CUR)

        def load_storage(key: str, storage_type: _StorageType, numel: int) -> _Storage:
            if key not in located:
                raise CheckpointFormatError(f"{path}: storage {key} has no data in the file; re-download it")
            stored_type, offset, count = located[key]
            dtype = stored_type.dtype if little else stored_type.dtype.newbyteorder(">")
            array = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,)) if count else \
                np.empty(0, dtype)
            return _Storage(key, array.astype(stored_type.dtype, copy=False), stored_type.bfloat16)

        storage_bytes = sum(count * t.dtype.itemsize for t, _, count in located.values())
        raw.seek(object_start)
        return _RestrictedUnpickler(f, path, load_storage, _Tensors(path, storage_bytes)).load()
