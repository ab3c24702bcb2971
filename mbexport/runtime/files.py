"""Input and output files of ``mbexport embed``: line readers with line numbers, atomic writers.

Readers yield ``(id, text)``: ``.txt`` (or stdin) gives one text per line, id = the line
number (1-based); ``.jsonl`` gives ``record[field]``, id = ``record["id"]`` when present,
else the line number. A line that is not UTF-8 (or not JSON, or lacks the field) raises
:class:`InputFileError` naming the line, or is skipped and counted with ``skip_bad_lines``.

Writers write to a temporary file next to the target (honouring the umask) and rename it into
place on success;
any exception (KeyboardInterrupt included) removes the temporary file, so a killed run
never leaves a partial output. ``.npy`` is streamed: rows are appended and the header,
written with room to spare first, is rewritten with the final shape at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from mbexport.errors import InputFileError, OutputFileError

NPY_HEADER_BYTES = 128  # magic + version + length + dict, padded: room for any 2-D float32 shape


@dataclass
class ReadCounts:
    lines: int = 0
    skipped: int = 0
    first_skipped: int | None = None  # line number of the first skipped line


def input_format(path: str, field: str | None) -> str:
    """``txt`` or ``jsonl`` from the suffix; stdin (``-``) is jsonl when a field is given."""
    if path == "-":
        return "jsonl" if field else "txt"
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".txt", ".text", ""):
        return "txt"
    raise InputFileError(f"{path}: unknown input type {suffix!r}; use a .txt (one text per line) or .jsonl file")


def read_texts(path: str, field: str | None = None, skip_bad_lines: bool = False,
               counts: ReadCounts | None = None) -> Iterator[tuple[Any, str]]:
    """Yields ``(id, text)`` from a .txt/.jsonl file or ``-`` (stdin), lazily."""
    fmt = input_format(path, field)
    field = field or "text"
    counts = counts if counts is not None else ReadCounts()
    name = "<stdin>" if path == "-" else path
    try:
        stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise InputFileError(f"{path}: cannot open input ({e.strerror})") from None
    try:
        for number, raw in enumerate(stream, start=1):
            counts.lines = number
            line = raw[:-1] if raw.endswith(b"\n") else raw
            line = line[:-1] if line.endswith(b"\r") else line
            try:
                text = line.decode("utf-8")
                if fmt == "txt":
                    yield number, text
                    continue
                if not text.strip():
                    continue
                record = json.loads(text)
                if not isinstance(record, dict) or field not in record:
                    raise ValueError(f"no {field!r} field in the record (choose one with --field)")
                value = record[field]
                if not isinstance(value, str):
                    raise ValueError(f"field {field!r} is {type(value).__name__}, not a string")  # noqa: TRY004
                yield _check_id(record.get("id", number)), value
            except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                why = "not valid UTF-8" if isinstance(e, UnicodeDecodeError) else str(e)
                if not skip_bad_lines:
                    raise InputFileError(f"{name}:{number}: {why}; fix the line or pass --skip-bad-lines") from None
                counts.skipped += 1
                if counts.first_skipped is None:
                    counts.first_skipped = number
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _check_id(value: Any) -> Any:
    """A record's id as given, unless JSON cannot carry it back out (NaN, Infinity): those are refused."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f'"id" is {json.dumps(value)}, which JSON cannot represent; use a string or a finite number')
    return value


def sidecar_path(path: Path) -> Path:
    """``vectors.npy`` -> ``vectors.lines.npy``: row i of the output came from input line ``lines[i]`` (1-based)."""
    return path.with_name(f"{path.stem}.lines.npy")


def count_lines(path: str) -> int:
    """Lines ``read_texts`` will number in ``path``: newlines counted in 1 MiB blocks (disk speed),
    plus a last line without one."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


class AtomicOutput:
    """Embedding rows to ``.npy`` or ``.jsonl``, committed by rename; a context manager.

    ``with AtomicOutput(path, hidden) as out: out.write(ids, rows, lines)``; leaving the block by an
    exception removes the temporary files and leaves any previous ``path`` untouched. With
    ``line_sidecar`` a ``.npy`` output gets ``sidecar_path(path)`` (int64, the input line of each
    row), renamed into place just before the output itself; a ``.npy`` written without one removes
    a stale sidecar of a previous run, which would describe other rows.
    """

    def __init__(self, path: Path, hidden: int, line_sidecar: bool = False) -> None:
        self.path = Path(path)
        self.format = self.path.suffix.lower().lstrip(".")
        if self.format not in ("npy", "jsonl"):
            raise InputFileError(f"{path}: output must end in .npy or .jsonl")
        if self.path.is_dir():
            raise OutputFileError(f"{path} is a directory; pass a file path for --out (e.g. {path}/embeddings.npy)")
        if not self.path.parent.is_dir():
            raise InputFileError(f"{path}: directory {self.path.parent} does not exist")
        self.hidden = hidden
        self.rows = 0
        self.sidecar = sidecar_path(self.path) if line_sidecar and self.format == "npy" else None
        self._file: IO[bytes] | None = None
        self._tmp: Path | None = None
        self._lines: IO[bytes] | None = None
        self._lines_tmp: Path | None = None

    def __enter__(self) -> AtomicOutput:  # noqa: PYI034
        with self._os_errors():
            self._file, self._tmp = _partial(self.path)
            if self.format == "npy":
                self._file.write(b"\0" * NPY_HEADER_BYTES)
            if self.sidecar is not None:
                self._lines, self._lines_tmp = _partial(self.sidecar)
                self._lines.write(b"\0" * NPY_HEADER_BYTES)
        return self

    def write(self, ids: list[Any], rows: np.ndarray, lines: list[int] | None = None) -> None:
        assert self._file is not None, "write() outside the with block"
        rows = np.ascontiguousarray(rows, dtype="<f4")
        if self.format == "npy":
            data = rows.tobytes()
        else:
            data = jsonl_rows(ids, rows, self.path).encode("utf-8")
        with self._os_errors():
            self._file.write(data)
            if self._lines is not None:
                assert lines is not None and len(lines) == len(rows), "a line number per row"
                self._lines.write(np.asarray(lines, dtype="<i8").tobytes())
        self.rows += len(rows)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._file is not None and self._tmp is not None
        try:
            if exc_type is None:
                with self._os_errors():
                    if self._lines is not None:
                        _finish(self._lines, _npy_header((self.rows,), "<i8"))
                    _finish(self._file, _npy_header((self.rows, self.hidden)) if self.format == "npy" else None)
                    if self.sidecar is not None and self._lines_tmp is not None:
                        os.replace(self._lines_tmp, self.sidecar)
                        self._lines_tmp = None
                    elif self.format == "npy":
                        sidecar_path(self.path).unlink(missing_ok=True)
                    os.replace(self._tmp, self.path)
                    self._tmp = None
        finally:
            for file in (self._file, self._lines):
                if file is not None:
                    with contextlib.suppress(OSError):  # a failed run: its buffered tail need not reach the disk
                        file.close()
            for tmp in (self._tmp, self._lines_tmp):
                if tmp is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)

    @contextlib.contextmanager
    def _os_errors(self) -> Iterator[None]:
        """OS errors (read-only directory, disk full) as one OutputFileError naming the output."""
        try:
            yield
        except OSError as e:
            raise OutputFileError(f"cannot write {self.path}: {e.strerror or e}; free some space or choose "
                                  "another --out") from None


class JsonlStream:
    """``--out -``: rows as JSONL on a stream (stdout), flushed as they are computed, in input order.
    Same interface as ``AtomicOutput``; nothing to commit, since a stream cannot be taken back."""

    format = "jsonl"

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.rows = 0

    def __enter__(self) -> JsonlStream:  # noqa: PYI034
        return self

    def write(self, ids: list[Any], rows: np.ndarray, lines: list[int] | None = None) -> None:
        self.stream.write(jsonl_rows(ids, np.asarray(rows, dtype="<f4")))
        self.stream.flush()
        self.rows += len(rows)

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()


def jsonl_rows(ids: list[Any], rows: np.ndarray, destination: Path | str = "<stdout>") -> str:
    """``{"id": ..., "embedding": [...]}`` per row, one a line; always valid JSON (no NaN/Infinity)."""
    if not np.isfinite(rows).all():
        bad = ids[int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])]
        raise OutputFileError(f"{destination}: the embedding of id {bad!r} is not finite (NaN/Inf), which "
                              "JSON cannot hold; write .npy, or check the export with mbexport parity")
    return "".join(json.dumps({"id": i, "embedding": row}, separators=(",", ":"), allow_nan=False) + "\n"
                   for i, row in zip(ids, rows.tolist()))


def _partial(path: Path) -> tuple[IO[bytes], Path]:
    """A temporary file beside ``path`` (same filesystem, so renaming it into place is atomic).

    Not mkstemp: its 0600 would ignore the umask; O_EXCL with a random name is as safe."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    return os.fdopen(fd, "wb"), tmp


def _finish(file: IO[bytes], header: bytes | None) -> None:
    """Write the final ``.npy`` header (when given), flush, fsync and close."""
    if header is not None:
        file.seek(0)
        file.write(header)
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """An NPY 1.0 header for little-endian C-order ``shape`` of ``descr``, exactly NPY_HEADER_BYTES long."""
    dims = f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(map(str, shape))})"
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}"
    prefix = 10  # magic (6) + version (2) + header length (2)
    body = text.ljust(NPY_HEADER_BYTES - prefix - 1) + "\n"
    header = b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")
    assert len(header) == NPY_HEADER_BYTES
    return header
