"""Input and output files of ``mbexport embed``: line readers with line numbers, atomic writers.

Readers yield ``(id, text)``: ``.txt`` (or stdin) gives one text per line, id = the line
number (1-based); ``.jsonl`` gives ``record[field]``, id = ``record["id"]`` when present,
else the line number. Lines end at ``\n``, ``\r\n`` or a lone ``\r`` (Python's universal
newlines); a UTF-8 byte order mark at the start of the input is dropped. A line that is not
UTF-8 (or not a JSON object, lacks the field, or repeats it) raises :class:`InputFileError`
naming the line, or is skipped and counted with ``skip_bad_lines``.

Memory per line is bounded for text lines when the caller says when a prefix is ``enough``
(the Embedder: more than ``max_length`` tokens): past that point the rest of the line cannot
change its vector, so it is read (and checked to be UTF-8) but not kept. A JSONL record is
parsed whole, so a record line longer than MAX_RECORD_BYTES is refused (its bytes past that
point are read, not kept) like any other bad line.

Writers write to a temporary file next to the target (honouring the umask) and rename it into
place on success;
any exception (KeyboardInterrupt included) removes the temporary file, so a killed run
never leaves a partial output. ``.npy`` is streamed: rows are appended and the header,
written with room to spare first, is rewritten with the final shape at the end.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from mbexport import jsonfiles
from mbexport.errors import InputFileError, OutputFileError

NPY_HEADER_BYTES = 128  # magic + version + length + dict, padded: room for any 2-D float32 shape
READ_BLOCK = 1 << 16  # most bytes of a line read at once (readline's limit)
KEEP_CHECK = 1 << 14  # a line's kept bytes at which ``enough`` is first asked (then at each doubling)
MAX_RECORD_BYTES = 1 << 26  # a JSONL line past this (64 MiB) is refused, not parsed: JSON is read whole
_EOL = re.compile(rb"\r\n?|\n")
_BOM = codecs.BOM_UTF8
NOT_UTF8 = "not valid UTF-8"
_JSON_TYPES = {"list": "an array", "str": "a string", "int": "a number", "float": "a number", "bool": "true/false",
               "NoneType": "null"}


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
    if suffix in (".txt", ".text", "") and field is not None:
        raise InputFileError(f"{path}: --field {field} reads a .jsonl file, and this is a text file (one text per "
                             "line); drop --field, or name the file .jsonl if it holds JSON records")
    if suffix in (".txt", ".text", ""):
        return "txt"
    raise InputFileError(f"{path}: unknown input type {suffix!r}; use a .txt (one text per line) or .jsonl file")


def read_texts(path: str, field: str | None = None, skip_bad_lines: bool = False,
               counts: ReadCounts | None = None, enough: Callable[[str], bool] | None = None,
               ) -> Iterator[tuple[Any, str]]:
    """Yields ``(id, text)`` from a .txt/.jsonl file or ``-`` (stdin), lazily.

    ``enough(prefix)`` (text files): True when every text that starts with ``prefix`` followed by
    a space or tab has the same vector; the reader then keeps no more of that line."""
    fmt = input_format(path, field)
    field = field or "text"
    fix = "fix the line or pass --skip-bad-lines"
    if fmt == "txt":
        yield from _read(path, lambda text, number: (number, text), skip_bad_lines, counts, fix, enough=enough)
        return

    def text_of(line: str, number: int) -> tuple[Any, str] | None:
        if not line.strip():
            return None
        record_id, value = _record(line, field, number)
        return _check_id(record_id), value

    yield from _read(path, text_of, skip_bad_lines, counts, fix, max_bytes=MAX_RECORD_BYTES)


def read_records(path: str, keys: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line of a JSONL file, read as ``read_texts`` reads it
    (the same lines, the same bad-line checks, ``keys`` not repeated), so its records pair with the rows
    ``mbexport embed`` wrote from that file."""
    def record_of(line: str, number: int) -> tuple[int, dict[str, Any]] | None:
        return (number, _object(line, keys)) if line.strip() else None

    yield from _read(path, record_of, False, None, "fix the line", max_bytes=MAX_RECORD_BYTES)


def _read(path: str, parse: Callable[[str, int], Any], skip_bad_lines: bool, counts: ReadCounts | None, fix: str,
          enough: Callable[[str], bool] | None = None, max_bytes: int | None = None) -> Iterator[Any]:
    """``parse(line, number)`` of each line (not None), a line that is not UTF-8 or that ``parse`` refuses
    with a ValueError being an InputFileError naming it (``fix`` says what to do) or skipped and counted."""
    counts = counts if counts is not None else ReadCounts()
    name = "<stdin>" if path == "-" else path
    try:
        stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise InputFileError(f"{path}: cannot open input ({e.strerror})") from None
    try:
        for number, (raw, problem) in enumerate(_lines(stream, enough, max_bytes), start=1):
            counts.lines = number
            line = raw[len(_BOM):] if number == 1 and raw.startswith(_BOM) else raw
            try:
                if problem:  # found in the part of an over-long line that was dropped
                    raise ValueError(problem)
                item = parse(line.decode("utf-8"), number)
                if item is not None:
                    yield item
            except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                why = NOT_UTF8 if isinstance(e, UnicodeDecodeError) else str(e)
                if not skip_bad_lines:
                    raise InputFileError(f"{name}:{number}: {why}; {fix}") from None
                counts.skipped += 1
                if counts.first_skipped is None:
                    counts.first_skipped = number
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _object(text: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """A JSONL line's object; ValueError when it is not one, or repeats one of ``keys`` (JSON readers
    disagree on which one counts)."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [key for key, _ in pairs]
        for key in keys:
            if names.count(key) > 1:
                raise ValueError(f"the record has {names.count(key)} {key!r} keys, and JSON readers disagree on "
                                 "which one counts; keep one")
        return dict(pairs)

    record = jsonfiles.loads(text, object_pairs_hook=unique)
    if not isinstance(record, dict):
        raise ValueError(f"the line is {_JSON_TYPES.get(type(record).__name__, 'a JSON value')}, not an object "  # noqa: TRY004
                         f"with a {keys[0]!r} field")
    return record


def _record(text: str, field: str, default_id: int) -> tuple[Any, str]:
    """``(record.get("id", default_id), record[field])`` of a JSONL line; ValueError naming what is wrong."""
    record = _object(text, (field, "id"))
    if field not in record:
        raise ValueError(f"no {field!r} field in the record (choose one with --field; it names a top-level key)")
    value = record[field]
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} is {type(value).__name__}, not a string")  # noqa: TRY004
    return record.get("id", default_id), value


class _Line:
    """The line being read: its bytes up to the point ``enough`` says decides its vector, and whether
    the bytes dropped after that point are UTF-8 (checked as they pass, never kept);
    with ``max_bytes``, a longer line is dropped whole and reported."""

    def __init__(self, enough: Callable[[str], bool] | None, max_bytes: int | None) -> None:
        self.kept = bytearray()
        self.enough = enough
        self.max_bytes = max_bytes
        self.next_check = KEEP_CHECK
        self.rest: codecs.IncrementalDecoder | None = None  # set once the rest is dropped
        self.problem: str | None = None  # why the line is bad, found while dropping its bytes

    def add(self, data: bytes) -> None:
        if self.rest is not None:
            self._check_rest(data)
            return
        if self.problem:
            return
        if self.max_bytes is not None and len(self.kept) + len(data) > self.max_bytes:
            self.problem = (f"the record is over {self.max_bytes >> 20} MiB (JSON records are read whole); split its "
                            "text, or use a .txt file, whose long lines are cut")
            self.kept = bytearray()
            return
        self.kept += data
        if self.enough is None or len(self.kept) < self.next_check:
            return
        self.next_check *= 2
        # Cut at a space or tab (ASCII, so never inside a UTF-8 sequence): BERT starts a new word there,
        # and nothing before it (cleaning, lower-casing, accents, word pieces) looks past it.
        cut = max(self.kept.rfind(b" "), self.kept.rfind(b"\t"))
        try:
            decided = cut > 0 and self.enough(self.kept[:cut].decode("utf-8"))
        except UnicodeDecodeError:
            decided = False  # a bad line: kept whole, as before, and reported
        if decided:
            tail = bytes(self.kept[cut:])
            del self.kept[cut:]
            self.rest = codecs.getincrementaldecoder("utf-8")()
            self._check_rest(tail)

    def _check_rest(self, data: bytes, final: bool = False) -> None:
        if self.problem is None and self.rest is not None:
            try:
                self.rest.decode(data, final)
            except UnicodeDecodeError:
                self.problem = NOT_UTF8

    def finish(self) -> tuple[bytes, str | None]:
        self._check_rest(b"", final=True)
        return bytes(self.kept), self.problem


def _lines(stream: IO[bytes], enough: Callable[[str], bool] | None,
           max_bytes: int | None) -> Iterator[tuple[bytes, str | None]]:
    """``(line, problem)`` for each line of ``stream``, without its end (``\\n``, ``\\r\\n`` or a lone
    ``\\r``). Read by ``readline`` in pieces of at most READ_BLOCK bytes: a pipe's lines come out as they
    arrive, a short line costs one call, and a long one goes through ``_Line`` piece by piece."""
    line: _Line | None = None  # a line begun in an earlier piece
    after_cr = False  # the previous piece ended in \r: a \n starting this one belongs to it
    readline, limit = stream.readline, READ_BLOCK
    while piece := readline(limit):
        if line is None and not after_cr and piece[-1:] == b"\n" and b"\r" not in piece:
            yield piece[:-1], None  # the common case: one whole line
            continue
        start = 1 if after_cr and piece.startswith(b"\n") else 0
        after_cr = piece.endswith(b"\r")
        for end in _EOL.finditer(piece, start):
            line = line or _Line(enough, max_bytes)
            line.add(piece[start:end.start()])
            yield line.finish()
            line, start = None, end.end()
        if start < len(piece):
            line = line or _Line(enough, max_bytes)
            line.add(piece[start:])
    if line is not None:
        yield line.finish()


def _check_id(value: Any) -> Any:
    """A record's id as given, unless JSON cannot carry it back out (NaN, Infinity): those are refused."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f'"id" is {json.dumps(value)}, which JSON cannot represent; use a string or a finite number')
    return value


def sidecar_path(path: Path) -> Path:
    """``vectors.npy`` -> ``vectors.lines.npy``: row i of the output came from input line ``lines[i]`` (1-based)."""
    return path.with_name(f"{path.stem}.lines.npy")


def count_lines(path: str) -> int:
    """Lines ``read_texts`` will number in ``path``: line ends (``\n``, ``\r\n``, a lone ``\r``) counted
    in 1 MiB blocks (disk speed), plus a last line without one."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
            lines -= last == b"\r" and block.startswith(b"\n")
            last = block[-1:]
    return lines + (last not in (b"\n", b"\r"))


class AtomicOutput:
    """Embedding rows to ``.npy`` or ``.jsonl``, committed by rename; a context manager.

    ``with AtomicOutput(path, hidden) as out: out.write(ids, rows, lines)``; leaving the block by an
    exception removes the temporary files and leaves any previous ``path`` untouched. A ``path`` that
    is a symlink is written through (its target is replaced, the link stays); one that is the
    ``source`` being read (the same file by any name, or stdin's file for ``-``) is refused. With
    ``line_sidecar`` a ``.npy`` output gets ``sidecar_path(path)`` (int64, the input line of each
    row), renamed into place just before the output itself; a ``.npy`` written without one removes
    a stale sidecar of a previous run, which would describe other rows.
    """

    def __init__(self, path: Path, hidden: int, line_sidecar: bool = False, source: str | None = None) -> None:
        self.path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
        self.format = self.path.suffix.lower().lstrip(".")
        if Path(path).is_dir():
            raise OutputFileError(f"{path} is a directory; pass a file path for --out (e.g. {path}/embeddings.npy)")
        if self.format not in ("npy", "jsonl"):
            raise OutputFileError(f"{path}: --out must end in .npy or .jsonl (or be - for JSONL on stdout)")
        if not self.path.parent.is_dir():
            raise OutputFileError(f"{path}: directory {self.path.parent} does not exist; create it or choose "
                                  "another --out")
        if source is not None and _same_file(self.path, source):
            raise OutputFileError(f"{path} is the input {'<stdin>' if source == '-' else source}: writing it "
                                  "would replace the texts being "
                                  "read; choose another --out")
        self.hidden = hidden
        self.rows = 0
        self.sidecar = sidecar_path(self.path) if line_sidecar and self.format == "npy" else None
        self._file: IO[bytes] | None = None
        self._tmp: Path | None = None
        self._lines: IO[bytes] | None = None
        self._lines_tmp: Path | None = None

    def __enter__(self) -> AtomicOutput:  # noqa: PYI034
        try:
            with self._os_errors():
                self._tmp = _partial_name(self.path)  # named before it exists, so a clean-up can always find it
                self._file = _create(self._tmp)
                if self.format == "npy":
                    self._file.write(b"\0" * NPY_HEADER_BYTES)
                if self.sidecar is not None:
                    self._lines_tmp = _partial_name(self.sidecar)
                    self._lines = _create(self._lines_tmp)
                    self._lines.write(b"\0" * NPY_HEADER_BYTES)
        except BaseException:  # an OS error, or Ctrl-C / SIGTERM after a file was made (no __exit__ then)
            self._discard()
            raise
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
            self._discard()

    def _discard(self) -> None:
        """Close the files and remove the temporary ones not renamed into place."""
        for file in (self._file, self._lines):
            if file is not None:
                with contextlib.suppress(OSError):  # a failed run: its buffered tail need not reach the disk
                    file.close()
        for tmp in (self._tmp, self._lines_tmp):
            if tmp is not None:
                with contextlib.suppress(OSError):  # never made (or a read-only directory): the first error stands
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


def _same_file(path: Path, source: str) -> bool:
    """Whether ``path`` exists and is the file ``source`` names (``-``: the file on stdin, if any)."""
    try:
        out = os.stat(path)
        src = os.fstat(sys.stdin.fileno()) if source == "-" else os.stat(source)
    except (OSError, ValueError):  # no such output yet, or a stdin without a file descriptor
        return False
    return (out.st_dev, out.st_ino) == (src.st_dev, src.st_ino)


def _partial_name(path: Path) -> Path:
    """A temporary file name beside ``path`` (same filesystem, so renaming it into place is atomic)."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.partial"


def _create(tmp: Path) -> IO[bytes]:
    """``tmp``, created for writing. Not mkstemp: its 0600 would ignore the umask; O_EXCL with a random
    name is as safe."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    return os.fdopen(fd, "wb")


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
