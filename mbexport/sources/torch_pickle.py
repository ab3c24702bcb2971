"""``pytorch_model.bin`` -> ``dict[str, np.ndarray]`` without torch and without running the pickle.

A PyTorch checkpoint is a pickle, and unpickling can call any importable function. This
reader unpickles with an allow-list: it resolves only the handful of globals a saved state
dict uses, each to a local stand-in that builds numpy arrays; any other global (``os.system``,
``builtins.eval``, a model class ...) raises ``UnsafeCheckpointError`` before anything runs.

Both layouts torch.save has written are read:

- zip (torch >= 1.6)::

      <any top folder>/data.pkl        the pickled object; tensors refer to storages by key
      <any top folder>/data/<key>      raw little-endian bytes of storage <key>
      <any top folder>/byteorder       optional, "little" or "big"

- legacy: five pickles in a row (magic number, protocol version, sys_info, the object,
  the sorted storage keys), then for each key an int64 element count and the raw bytes.

A tensor is ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``: a strided view of
its storage, copied out here into a contiguous array. bfloat16 becomes float32 (numpy has
no bfloat16); everything else keeps its dtype.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mbexport.errors import CheckpointFormatError, UnsafeCheckpointError

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


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: only carries the element dtype."""

    def __init__(self, name: str, dtype: Any) -> None:
        self.name = name
        self.bfloat16 = dtype == "bfloat16"
        self.dtype = np.dtype(np.uint16 if self.bfloat16 else dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _DType:
    """Stand-in for a ``torch.dtype`` object."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Storage:
    """A loaded storage: a flat numpy array of its element type."""

    def __init__(self, array: np.ndarray, bfloat16: bool) -> None:
        self.array = array
        self.bfloat16 = bfloat16


def _rebuild_tensor(
    storage: _Storage, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2``: the strided view, copied out contiguous."""
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointFormatError(f"tensor with inconsistent size {size} and stride {stride}")
    flat = storage.array
    if 0 in size:
        out = np.zeros(size, dtype=flat.dtype)
    else:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if storage_offset < 0 or last >= flat.size:
            raise CheckpointFormatError(
                f"tensor of size {size} at offset {storage_offset} runs past its storage of {flat.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[storage_offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
        )
        out = np.array(view, copy=True, order="C")
    if storage.bfloat16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    """``torch._utils._rebuild_parameter[_with_state]``: a Parameter is its data here."""
    if not isinstance(data, np.ndarray):
        raise UnsafeCheckpointError(f"parameter rebuilt from {type(data).__name__}, not a tensor")
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
    **{("torch", name): _DType(name) for name in _TORCH_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``_ALLOWED`` globals; storages come from ``load_storage``."""

    def __init__(self, file: BinaryIO, path: Path, load_storage: Any) -> None:
        super().__init__(file)
        self._path = path
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._path}: refused to run pickle global {module}.{name}: a weights file should hold only "
                "tensors; do not load it with torch.load either, and get the checkpoint from a trusted source "
                "(or as model.safetensors)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self._path}: unexpected persistent id {str(pid)[:80]!r} in the pickle")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if isinstance(storage_type, _DType):  # newer pickles may name a dtype instead of a storage class
            dtype = _TORCH_DTYPES[storage_type.name]
            storage_type = _StorageType(storage_type.name, dtype)
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
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
            IndexError, TypeError, AttributeError, MemoryError) as e:  # fmt: skip
        raise CheckpointFormatError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}); re-download it"
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


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pickles:
            raise CheckpointFormatError(f"{path}: a zip file without data.pkl is not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if f"{prefix}byteorder" in names:
            big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
        storages: dict[str, _Storage] = {}

        def load_storage(key: str, storage_type: _StorageType, numel: int) -> _Storage:
            if key not in storages:
                try:
                    info = archive.getinfo(f"{prefix}data/{key}")
                except KeyError:
                    raise CheckpointFormatError(f"{path}: storage {key} is missing from the archive") from None
                dtype = storage_type.dtype.newbyteorder(">") if big_endian else storage_type.dtype
                if info.file_size % dtype.itemsize:
                    raise CheckpointFormatError(f"{path}: storage {key} has a size that is not whole elements")
                array = _map_member(path, archive, info, dtype)
                if big_endian:
                    array = array.astype(storage_type.dtype)
                storages[key] = _Storage(array, storage_type.bfloat16)
            return storages[key]

        with archive.open(pickles[0]) as f:
            return _RestrictedUnpickler(io.BytesIO(f.read()), path, load_storage).load()


def _map_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: np.dtype) -> np.ndarray:
    """A storage's elements: memory-mapped when stored uncompressed (as torch.save writes them),
    so tensors are copied out of the file once instead of read, then copied."""
    count = info.file_size // dtype.itemsize
    if info.compress_type == zipfile.ZIP_STORED and count:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local_header = f.read(30)
        if len(local_header) == 30 and local_header[:4] == b"PK\x03\x04":
            name_len, extra_len = struct.unpack("<HH", local_header[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if start + info.file_size <= path.stat().st_size:
                return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(count,))
    return np.frombuffer(archive.read(info), dtype=dtype)


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        head = f.read(2)
        if not head or head[0] != 0x80:
            raise CheckpointFormatError(
                f"{path}: neither a zip nor a legacy PyTorch checkpoint (tar-era files are not supported); re-save it "
                "with a recent torch or as model.safetensors"
            )
        f.seek(0)
        refs: dict[str, tuple[_StorageType, int]] = {}

        def no_storage(key: str, storage_type: _StorageType, numel: int) -> Any:
            raise CheckpointFormatError(f"{path}: storage reference in the header")

        def header() -> Any:
            return _RestrictedUnpickler(f, path, no_storage).load()

        if header() != _LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        if header() != _LEGACY_PROTOCOL:
            raise CheckpointFormatError(f"{path}: unsupported legacy PyTorch protocol version")
        sys_info = header()
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)

        storages: dict[str, _Storage] = {}
        pending: list[tuple[str, _StorageType]] = []

        def defer(key: str, storage_type: _StorageType, numel: int) -> _Storage:
            if key not in storages:
                storages[key] = _Storage(np.empty(0, storage_type.dtype), storage_type.bfloat16)
                refs[key] = (storage_type, numel)
                pending.append((key, storage_type))
            return storages[key]

        # Tensors are rebuilt while unpickling, before the raw data is read: keep the calls and
        # replay them once storages are filled.
        calls: list[tuple[np.ndarray, tuple[Any, ...]]] = []

        class _Deferred(_RestrictedUnpickler):
            def find_class(self, module: str, name: str) -> Any:
                found = super().find_class(module, name)
                return record if found is _rebuild_tensor else found

        def record(*args: Any) -> np.ndarray:
            placeholder = np.empty(0)
            calls.append((placeholder, args))
            return placeholder

        obj = _Deferred(f, path, defer).load()
        keys = _RestrictedUnpickler(f, path, no_storage).load()
        if not isinstance(keys, list):
            raise CheckpointFormatError(f"{path}: malformed storage key list")
        for key in keys:
            key = str(key)
            (count,) = struct.unpack("<q" if little else ">q", f.read(8))
            if key not in refs:
                raise CheckpointFormatError(f"{path}: storage {key} is not referenced by any tensor")
            storage_type, _ = refs[key]
            dtype = storage_type.dtype if little else storage_type.dtype.newbyteorder(">")
            raw = f.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise CheckpointFormatError(f"{path}: truncated (storage {key} is cut short); re-download it")
            storages[key].array = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype, copy=False)

    rebuilt = {id(placeholder): _rebuild_tensor(*args) for placeholder, args in calls}

    def replace(value: Any) -> Any:
        if isinstance(value, np.ndarray) and id(value) in rebuilt:
            return rebuilt[id(value)]
        if isinstance(value, dict):
            return {k: replace(v) for k, v in value.items()}
        return value

    return replace(obj)
