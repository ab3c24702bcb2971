"""Hostile sizes and OS faults against the native core: refused with an mbexport error, never a crash.

Calls that crashed the interpreter (SIGSEGV from a wrapped rows x width, SIGABRT from a refused
or failing worker thread) run in a child interpreter, started from a neutral directory so the
installed package is imported. The child caps its own address space (RLIMIT_AS) after importing,
both to make "the OS refuses a thread" and "a worker runs out of memory" happen on demand and so
that old code cannot eat the machine. Each test asserts the child exited normally (no signal) and
printed the mbexport error or the correct ids.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mbexport import _native
from mbexport.errors import (
    CudaUnavailableError,
    ResourceLimitError,
    TokenizerInputError,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "the", "cat", "##s", ",", "."]

# Runs first in every child: the tokenizer, and helpers to cap the address space after imports.
PRELUDE = '''
import resource, sys
import numpy as np
from mbexport import WordPieceTokenizer, _native
from mbexport.errors import MbexportError

tok = WordPieceTokenizer(sys.argv[1])
HARD = resource.getrlimit(resource.RLIMIT_AS)[1]

def cap_address_space(extra_mib):
    """RLIMIT_AS = what the process maps now + extra_mib: thread stacks (8 MiB) and big buffers past it fail."""
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_mib * 2**20, HARD))

def lift_cap():
    resource.setrlimit(resource.RLIMIT_AS, (HARD, HARD))

def refused(call):
    """Runs call(); prints 'REFUSED <class>: <message>' for an mbexport error."""
    try:
        return call()
    except MbexportError as error:
        print(f"REFUSED {type(error).__name__}: {error}", flush=True)
        return None

cap_address_space(4096)  # a safety net: nothing below needs more
'''


def run_child(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Runs PRELUDE + body in a fresh interpreter; fails the test if the child died from a signal."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body), str(vocab)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode >= 0, f"child killed by signal {-proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("options", [
    {"padding": "max_length", "max_length": 2**62, "truncation": True},  # SIGSEGV before: rows x width wrapped
    {"padding": "max_length", "max_length": 2**63 - 1},
    {"padding": "max_length", "max_length": 2**31},  # 4 x 2**31 cells: past the limit without wrapping
    {"padding": True, "pad_to_multiple_of": 2**62},
    {"padding": True, "pad_to_multiple_of": 2**63 - 1},  # width + multiple overflows int64
], ids=["max_length_2^62", "max_length_2^63-1", "max_length_2^31", "multiple_2^62", "multiple_2^63-1"])
def test_huge_padded_width_is_refused(tmp_path: Path, options: dict) -> None:
    proc = run_child(tmp_path, f'''
        out = refused(lambda: tok(["a", "b c", "the cat", "d"], **{options!r}))
        print("RESULT", None if out is None else len(out["input_ids"]))
    ''')
    assert "REFUSED TokenizerInputError: the padded output would be 4 rows x" in proc.stdout
    assert "more than 2**31 cells per array; lower max_length or pad_to_multiple_of" in proc.stdout


def test_padded_output_beyond_memory_is_refused_before_allocating(tmp_path: Path) -> None:
    """2**31 cells (48 GiB of int64 arrays) is within the cell limit but not within the child's 256 MiB cap."""
    proc = run_child(tmp_path, '''
        cap_address_space(256)
        refused(lambda: tok(["a", "b", "c", "d"], padding="max_length", max_length=2**29))
        lift_cap()
        print("AFTER", tok(["a b"], padding="max_length", max_length=6)["input_ids"])
    ''')
    assert "REFUSED ResourceLimitError: the padded output (4 x 536870912) needs 49152 MiB" in proc.stdout
    assert "(ulimit -v); ask for less or raise the limit" in proc.stdout
    assert "AFTER [[2, 5, 6, 3, 0, 0]]" in proc.stdout  # the process and the tokenizer still work
    assert issubclass(ResourceLimitError, MemoryError)


@pytest.mark.parametrize(("options", "message"), [
    ({"padding": True, "pad_to_multiple_of": -3}, "pad_to_multiple_of must be >= 0"),
    ({"truncation": True, "max_length": 4, "stride": -1, "return_overflowing_tokens": True}, "stride must be >= 0"),
    ({"truncation": True, "max_length": 7, "stride": -(2**32) + 2, "return_overflowing_tokens": True},
     "stride must be >= 0"),
    ({"truncation": True, "max_length": 4, "stride": 2**64}, "stride must be >= 0 (and below 2**63)"),
    ({"threads": 2**70}, "threads must be >= -9223372036854775808 (and below 2**63)"),
], ids=["negative_multiple", "negative_stride", "stride_wrapping_uint32", "stride_2^64", "threads_2^70"])
def test_negative_or_oversized_options_are_refused(tmp_path: Path, options: dict, message: str) -> None:
    """A negative multiple shrank the row width below its tokens (writes past each row); a negative
    stride silently skipped tokens or, wrapped to a zero step, looped until memory ran out."""
    proc = run_child(tmp_path, f'''
        out = refused(lambda: tok(["a b c d a b c d a b c d", "the cat"], **{options!r}))
        print("RESULT", None if out is None else out["input_ids"])
    ''')
    assert f"REFUSED TokenizerInputError: {message}" in proc.stdout


def test_threads_5000_under_an_address_space_limit_give_correct_ids(tmp_path: Path) -> None:
    """threads=5000 used to start one thread per 16 texts; the OS refused one partway (ulimit -v) and
    std::system_error unwound over the joinable ones: SIGABRT. Now clamped to the usable CPUs."""
    proc = run_child(tmp_path, '''
        texts = [("the cat " * (i % 7) + "a, b. c d") for i in range(4000)]
        want = tok(texts, threads=1, padding=True, return_tensors="np")["input_ids"]
        cap_address_space(200)
        got = tok(texts, threads=5000, padding=True, return_tensors="np")["input_ids"]
        print("SAME", got.shape == want.shape and bool((got == want).all()))
    ''')
    assert "SAME True" in proc.stdout


@pytest.mark.parametrize("threads", [0, 2, 64])
def test_tokenizer_runs_inline_when_the_os_refuses_every_thread(tmp_path: Path, threads: int) -> None:
    """With less address space left than one thread stack, no worker thread can start: the calling
    thread does all the work (before: RuntimeError, or SIGABRT when an earlier thread had started)."""
    proc = run_child(tmp_path, f'''
        texts = [("the cat " * (i % 5) + "d, c") for i in range(256)]
        want = tok(texts, threads=1, padding=True, return_tensors="np")["input_ids"]
        packed_want = tok.encode_batch_arrays(texts, threads=1)[0]
        cap_address_space(3)
        got = tok(texts, threads={threads}, padding=True, return_tensors="np")["input_ids"]
        packed = tok.encode_batch_arrays(texts, threads={threads})[0]
        print("SAME", bool((got == want).all()), bool((packed == packed_want).all()))
    ''')
    assert "SAME True True" in proc.stdout
    assert _native.default_threads() >= 1


def test_worker_out_of_memory_is_an_error_and_the_process_recovers(tmp_path: Path) -> None:
    """std::bad_alloc inside a worker thread used to call std::terminate (SIGABRT). Now every worker
    stops, all threads join and the caller gets ResourceLimitError; the same tokenizer then works."""
    proc = run_child(tmp_path, '''
        texts = ["a " * 200_000] * 64  # 12.8M ids: ~50 MiB of int32, more while the vectors grow
        cap_address_space(40)
        refused(lambda: tok(texts, threads=2))
        refused(lambda: tok.encode_batch_arrays(texts, max_length=None, threads=2))  # no limit: read whole
        print("STOPPED", tok.encode_batch_arrays(texts, max_length=512, threads=2)[2][-1])  # reads prefixes
        lift_cap()
        out = tok(texts[:3], add_special_tokens=False)["input_ids"]
        print("RECOVERED", [len(row) for row in out], set(out[0]))
    ''')
    assert proc.stdout.count("REFUSED ResourceLimitError: tokenizing 64 texts ran out of memory") == 2
    assert "RECOVERED [200000, 200000, 200000] {5}" in proc.stdout
    assert f"STOPPED {64 * 512}" in proc.stdout


def test_batcher_padded_view_beyond_limits_is_refused(tmp_path: Path) -> None:
    """pad_multiple 2**30 with an unlimited budget puts every row in one batch of rows x 2**30 cells."""
    proc = run_child(tmp_path, '''
        ids = np.array([2, 5, 3, 2, 6, 7, 3, 2, 8, 3], np.int32)
        cu = np.array([0, 3, 7, 10])
        b = _native.Batcher(ids, cu, pad_multiple=2**30, batch_tokens=2**62)
        refused(lambda: b.padded(0))
        refused(lambda: b.packed(0))
        print("LEN", len(b), b.padded_tokens)
    ''')
    assert "REFUSED TokenizerInputError: batcher: a batch of 3 rows x 1073741824 padded tokens is over 2147483648" \
        in proc.stdout
    assert "REFUSED TokenizerInputError: batcher: a batch of 3 rows x 1073741824 padded tokens is over 2147483647" \
        in proc.stdout
    assert "LEN 1 3221225472" in proc.stdout


@pytest.mark.parametrize(("option", "value", "message"), [
    ("pad_multiple", 2**31, "Batcher: pad_multiple must be between 1 and 2147483647"),
    ("pad_multiple", 0, "Batcher: pad_multiple must be between 1 and 2147483647"),
    ("max_length", 2**70, "Batcher: max_length must be >= 0 (and below 2**63)"),
    ("batch_tokens", -(2**64), "Batcher: batch_tokens must be >= 1 (and below 2**63)"),
    ("window", -1, "Batcher: window must be >= 0"),
])
def test_batcher_options_are_range_checked(option: str, value: int, message: str) -> None:
    ids, cu = np.array([2, 5, 3], np.int32), np.array([0, 3])
    options: dict[str, Any] = {option: value}
    with pytest.raises(TokenizerInputError, match=re.escape(message)):
        _native.Batcher(ids, cu, **options)


def test_batcher_batch_index_is_bounds_checked() -> None:
    b = _native.Batcher(np.array([2, 5, 3], np.int32), np.array([0, 3]))
    for index in (-1, 1, 2**70):
        with pytest.raises(IndexError, match=r"Batcher: batch .* out of range \[0, 1\)"):
            b.padded(index)


def test_scatter_rows_checks_every_index_before_writing() -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = np.zeros((4, 3), np.float32)
    # Row 0 is in range, row 1 is not: nothing may be written (before: row 0 was).
    with pytest.raises(TokenizerInputError, match=r"scatter index 99 \(row 1\) is outside the output block of 4"):
        _native.scatter_rows(rows, np.array([10, 99]), out, base=10)
    assert not out.any()
    # Indices whose difference with base overflows int64.
    for index, base in ((-(2**63), 1), (2**63 - 1, -1), (-(2**63), 2**63 - 1)):
        with pytest.raises(TokenizerInputError, match="outside the output block"):
            _native.scatter_rows(rows[:1], np.array([index]), out, base=base)
    assert not out.any()
    with pytest.raises(TokenizerInputError, match="disagree in shape"):
        _native.scatter_rows(rows, np.array([[0], [1]]), out)


@pytest.mark.parametrize("out", [
    np.zeros((8, 3), np.float32)[::2],  # not contiguous: a converted copy would swallow the writes
    np.zeros((4, 3), np.float64),
], ids=["strided", "float64"])
def test_scatter_rows_never_writes_into_a_converted_copy(out: np.ndarray) -> None:
    with pytest.raises(TypeError):
        _native.scatter_rows(np.ones((1, 3), np.float32), np.array([2]), out)
    assert not out.any()


def test_scatter_rows_refuses_a_read_only_output() -> None:
    out = np.zeros((2, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(TokenizerInputError, match="read-only"):
        _native.scatter_rows(np.ones((1, 3), np.float32), np.array([0]), out)


def test_host_buffer_size_cannot_wrap(tmp_path: Path) -> None:
    """nbytes 2**64 - 1 rounded up to the alignment wrapped to 0: a 0-byte allocation recorded as
    2**64 - 1 bytes, which the buffer protocol then exposed."""
    proc = run_child(tmp_path, '''
        for nbytes in (2**64 - 1, 2**63 - 1, 2**62):
            buf = refused(lambda: _native.HostBuffer(nbytes))
            if buf is not None:
                print("READ", memoryview(buf)[-1])
        buf = _native.HostBuffer(100)
        print("SMALL", buf.nbytes, len(memoryview(buf)))
    ''')
    assert "REFUSED TokenizerInputError: HostBuffer: nbytes must be >= 0 (and below 2**63), got 18446744073709551615" \
        in proc.stdout
    assert "REFUSED TokenizerInputError: host buffer: 9223372036854775807 bytes is too large" in proc.stdout
    assert "REFUSED ResourceLimitError: host buffer needs 4398046511104 MiB" in proc.stdout
    assert "SMALL 100 100" in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    ((2**62,), "CudaStager: capacity_tokens must be between 1 and 2147483648"),
    ((0,), "CudaStager: capacity_tokens must be between 1 and 2147483648"),
    ((4096, 10**6), "CudaStager: slots must be between 1 and 16"),
    ((4096, 0), "CudaStager: slots must be between 1 and 16"),
])
def test_cuda_stager_sizes_are_checked_before_cuda_is_needed(args: tuple, message: str) -> None:
    with pytest.raises(TokenizerInputError, match=message):
        _native.CudaStager(*args)


def _cuda_usable() -> bool:
    try:
        _native.cuda_runtime_info([])
        return True
    except CudaUnavailableError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_usable(), reason="needs a CUDA GPU")
def test_cuda_stager_slot_accessors_are_bounds_checked() -> None:
    stager = _native.CudaStager(256, 2)
    for slot in (-1, 2, 2**40):
        with pytest.raises(IndexError, match=r"CudaStager: slot .* out of range \[0, 2\)"):
            stager.shape(slot)
        with pytest.raises(IndexError, match="CudaStager: slot"):
            stager.device_ptrs(slot)
        with pytest.raises(IndexError, match="CudaStager: slot"):
            stager.dlpack(slot)
    assert stager.shape(1) == (0, 0)
