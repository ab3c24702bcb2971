"""The export directory's contract, shared by the writer, the runtime, the CLI and the registry.

An export directory holds the files named here and a manifest (``mbexport.json``) in format
``FORMAT_VERSION``. Reading it back needs no exporter: this module imports neither onnx nor
onnxruntime, so the runtime and ``mbexport info`` read a manifest without loading the converter.
Writing the manifest is ``mbexport.export.manifest``'s job; the atomic swap is ``export.writer``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from mbexport import jsonfiles
from mbexport.errors import ExportDirError
from mbexport.semantics import EmbeddingSemantics
from mbexport.spec import is_int, sha256_files

FORMAT_VERSION = 1
MANIFEST = "mbexport.json"
MODEL = "model.onnx"
EXTERNAL_DATA = "model.onnx.data"
CONFIG = "config.json"
VOCAB = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
# The graph output holding pooled (and maybe normalised) rows; the manifest record of the same name says how.
SENTENCE_EMBEDDING = "sentence_embedding"
# ``--flavor packed``: the padding-free graph (onnxruntime's PackedAttention, CUDA only) beside the padded
# fused MODEL that every other device, parity and other tools read; the manifest's "packed" record names it.
PACKED_MODEL = "model.packed.onnx"
# Its inputs, int32, in the order the native Batcher's packed mode returns them.
PACKED_INPUTS = ("input_ids", "token_type_ids", "position_ids", "token_offset", "cu_seqlens")
# ``mbexport calibrate``: the calibrated int8 model for OpenVINO (IR: graph + weights) beside MODEL; the manifest's
# CALIBRATED_INT8 record lists both files with their sha256 and says how they were made.
INT8_MODEL = "model.int8.xml"
INT8_WEIGHTS = "model.int8.bin"
CALIBRATED_INT8 = "calibrated_int8"
# The manifest's list of the source files an export copied (sentence-transformers' modules.json, 1_Pooling/config.json
# ...), relative POSIX names: convert may replace them with the rest of the export.
CARRIED = "carried"
# The tokenizer's files, in the order WordPieceTokenizer.from_pretrained and save_pretrained use them.
TOKENIZER_FILES = (VOCAB, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
REQUIRED_FILES = (MODEL, CONFIG, VOCAB, TOKENIZER_CONFIG, MANIFEST)
# Every file an export directory may hold: anything else there is the user's, never replaced.
EXPORT_FILES = frozenset({*REQUIRED_FILES, EXTERNAL_DATA, SPECIAL_TOKENS_MAP, PACKED_MODEL, INT8_MODEL, INT8_WEIGHTS})


def is_export(directory: Path) -> bool:
    """Whether ``directory`` looks like an export (has a manifest); ``read_manifest`` checks the rest."""
    return (directory / MANIFEST).is_file()


def mbexport_home() -> Path:
    """mbexport's own directory: $MBEXPORT_HOME, default ~/.cache/mbexport (exports, the verified-model cache)."""
    return Path(os.environ.get("MBEXPORT_HOME", Path.home() / ".cache" / "mbexport"))


def export_home() -> Path:
    """Where exports go without ``--out``: $MBEXPORT_HOME/exports, default ~/.cache/mbexport/exports."""
    return mbexport_home() / "exports"


def backup_dirs(out: Path) -> list[Path]:
    """``.NAME.old-PID-NS`` exports moved aside by a two-rename swap, oldest first."""
    def stamp(path: Path) -> int:
        tail = path.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    return sorted(out.parent.glob(f".{out.name}.old-*"), key=stamp)


def resolve_export_dir(export_dir: Path) -> Path:
    """``export_dir``, or while a swap without atomic exchange is between its two renames (or was killed
    there), the previous export it moved aside: readers always find an intact export."""
    if export_dir.exists() or export_dir.is_symlink():
        return export_dir
    backups = backup_dirs(export_dir)
    if backups:
        return backups[-1]
    return export_dir  # the swap may have finished meanwhile; if not, the caller reports it missing


def read_manifest(export_dir: Path) -> dict[str, Any]:
    """Load and check an export directory's manifest; clear errors for anything missing, foreign or malformed."""
    export_dir = resolve_export_dir(export_dir)
    if not export_dir.is_dir():
        raise ExportDirError(f"{export_dir} is not a directory; pass an export directory written by mbexport convert")
    missing = [name for name in REQUIRED_FILES if not (export_dir / name).exists()]
    if missing:
        raise ExportDirError(f"{export_dir} is missing {', '.join(missing)}; re-run mbexport convert to rebuild it")
    path = export_dir / MANIFEST
    try:
        manifest = jsonfiles.read(path)
    except ValueError as e:
        raise ExportDirError(f"{path} is not valid JSON ({e}); re-run mbexport convert") from None
    except OSError as e:
        raise ExportDirError(f"{path} cannot be read ({e.strerror}); check its permissions") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise ExportDirError(f"{export_dir} was written with manifest format {version!r}, this mbexport reads "
                             f"{FORMAT_VERSION}; re-run mbexport convert with this version")
    problem = _manifest_problem(manifest)
    if problem:
        raise ExportDirError(f"{path} is malformed: {problem}; re-run mbexport convert to rebuild {export_dir}")
    return manifest


# What readers rely on, by type; build_manifest writes all of it.
_FIELD_TYPES: dict[str, type] = {"head": str, "outputs": list, "flavor": str, "precision": str, "model": dict,
                                 "files": dict, "source": dict}
_MODEL_SIZES = ("layers", "hidden", "heads", "intermediate", "vocab", "max_position_embeddings")


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """The first field a reader would trip on, or None for a well-formed manifest."""
    for name, kind in _FIELD_TYPES.items():
        if not isinstance(manifest.get(name), kind):
            return f"{name!r} must be a {kind.__name__}, got {_kind(manifest.get(name))}"
    if not all(isinstance(o, str) for o in manifest["outputs"]):
        return "'outputs' must list output names (strings)"
    for name in _MODEL_SIZES:
        value = manifest["model"].get(name)
        if not is_int(value) or value < 1:
            return f"model.{name} must be a positive integer, got {value!r}"
    if not isinstance(manifest["source"].get("label"), str):
        return "source.label must be a string"
    if MODEL not in manifest["files"]:
        return f"'files' does not list {MODEL}"
    packed = manifest.get("packed")
    if packed is not None and not (isinstance(packed, dict) and packed.get("model") == PACKED_MODEL
                                   and PACKED_MODEL in manifest["files"]):
        return f"'packed' must be {{'model': {PACKED_MODEL!r}, ...}} with {PACKED_MODEL} listed in 'files'"
    for name, entry in manifest["files"].items():
        if name not in EXPORT_FILES:
            return f"'files' lists {name!r}, which is not a file an export writes"
        if not _file_entry(entry):
            return f"files[{name!r}] must be {{'bytes': int, 'sha256': 64 hex digits}}"
    carried = manifest.get(CARRIED, [])
    if not (isinstance(carried, list) and all(_is_carried_name(name) for name in carried)):
        return f"{CARRIED!r} must be a list of relative file names inside the export (at most one folder deep)"
    int8 = manifest.get(CALIBRATED_INT8)
    if int8 is not None and not (isinstance(int8, dict) and isinstance(int8.get("files"), dict)
                                 and set(int8["files"]) == {INT8_MODEL, INT8_WEIGHTS}
                                 and all(map(_file_entry, int8["files"].values()))):
        return (f"{CALIBRATED_INT8!r} must list {INT8_MODEL} and {INT8_WEIGHTS} in its 'files' as "
                "{'bytes': int, 'sha256': 64 hex digits}")
    return None


def _is_carried_name(name: Any) -> bool:
    parts = name.split("/") if isinstance(name, str) else []
    return 1 <= len(parts) <= 2 and all(part not in ("", ".", "..") and "\\" not in part for part in parts)


def _file_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and is_int(entry.get("bytes")) and entry["bytes"] >= 0
            and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64)


def packed_model(manifest: dict[str, Any]) -> str | None:
    """The padding-free graph's file name when the export has one (``--flavor packed``), else None."""
    return PACKED_MODEL if isinstance(manifest.get("packed"), dict) else None


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def verify_model_files(export_dir: Path, manifest: dict[str, Any], files: dict[str, Any] | None = None,
                       fix: str = "re-run mbexport convert to rebuild {export_dir}") -> None:
    """Check each file the manifest lists (model.onnx, its external data) against its size and sha256;
    ``files`` checks another record's files instead (the calibrated int8 model), ``fix`` says how to remake them.

    A tampered or swapped model raises :class:`ExportDirError`. Hashing a large model takes a
    while, so a verified file is remembered in ``$MBEXPORT_HOME/verified.json`` keyed by its path,
    device, inode, size, mtime_ns, ctime_ns and expected sha256: any write, replacement or even
    ``touch -m`` back to the old mtime changes the ctime or inode, so the file is hashed again.
    The cache lives in the user's own directory, not beside the export: an export may be
    read-only, and a cache there would be writable by whoever can swap the model.
    """
    cache = _VerifiedCache.load()
    fix = fix.format(export_dir=export_dir)
    for name, entry in (manifest["files"] if files is None else files).items():
        path = export_dir / name
        try:
            st = path.stat()
        except OSError as e:
            raise ExportDirError(f"{path} cannot be read ({e.strerror}); re-run mbexport convert") from None
        if st.st_size != entry["bytes"]:
            raise ExportDirError(f"{path} is {st.st_size} bytes but the manifest says {entry['bytes']}: it was "
                                 f"changed after export; {fix}")
        key = "|".join(map(str, (path.resolve(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                 entry["sha256"])))
        if cache.known(key):
            continue
        try:
            got = sha256_files([path])
        except OSError as e:
            raise ExportDirError(f"{path} cannot be read ({e.strerror}); check its permissions") from None
        if got != entry["sha256"]:
            raise ExportDirError(f"{path} does not match its manifest (sha256 {got[:12]}..., expected "
                                 f"{entry['sha256'][:12]}...): it was changed after export; {fix}")
        cache.add(key)
    cache.save()


class _VerifiedCache:
    """Keys of files already hashed and found intact; best effort (an unwritable home just means re-hashing)."""

    LIMIT = 512  # entries kept, most recent last
    _memory: ClassVar[set[str]] = set()  # this process's verifications, also when the file cannot be saved

    def __init__(self, path: Path, keys: list[str]) -> None:
        self.path = path
        self.keys = dict.fromkeys(keys)
        self.dirty = False

    @classmethod
    def load(cls) -> _VerifiedCache:
        path = mbexport_home() / "verified.json"
        try:
            keys = jsonfiles.read(path).get("verified", [])
        except (OSError, ValueError, AttributeError):
            keys = []
        return cls(path, [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else [])

    def known(self, key: str) -> bool:
        return key in self.keys or key in self._memory

    def add(self, key: str) -> None:
        self.keys[key] = None
        self._memory.add(key)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        keys = list(self.keys)[-self.LIMIT:]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"verified": keys}) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class PooledOutput:
    """What an export's ``sentence_embedding`` holds: the manifest's ``"sentence_embedding"`` record."""

    pooling: str
    normalize: bool

    @classmethod
    def of(cls, semantics: EmbeddingSemantics) -> PooledOutput:
        """What an export of a source with these semantics pools to (build and parity agree through this)."""
        return cls(semantics.pooling, semantics.normalize)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> PooledOutput | None:
        """The record of an export that has the output (None for exports made before it existed)."""
        record = manifest.get(SENTENCE_EMBEDDING)
        if SENTENCE_EMBEDDING not in manifest.get("outputs", ()) or not isinstance(record, dict):
            return None
        return cls(str(record.get("pooling")), bool(record.get("normalize")))
