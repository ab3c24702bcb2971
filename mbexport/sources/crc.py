"""CRC32C (Castagnoli, reflected polynomial 0x82F63B78) and LevelDB's mask, as TF checkpoints store them.

Runs at memory speed through the ``crc32c`` package (hardware CRC32C) when it is installed,
else through a numpy version (lanes of 4-byte words combined with GF(2) shift operators)
that needs nothing beyond numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["CRC32C_IMPLEMENTATION", "crc32c", "mask_crc", "unmask_crc"]


_POLY = 0x82F63B78
_MASK_DELTA = 0xA282EAD8


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _byte_table()
_TABLE_LIST = [int(x) for x in _TABLE]


def mask_crc(crc: int) -> int:
    """LevelDB/TF's masked CRC (stored CRCs are masked so CRCs of CRCs stay well-spread)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _zeros_op(nbytes: int) -> tuple[int, ...]:
    """The GF(2)-linear map 'feed ``nbytes`` zero bytes' on the raw register, as 32 columns."""
    return _power_op(nbytes.bit_length() - 1) if nbytes and nbytes & (nbytes - 1) == 0 else _compose_zeros(nbytes)


def _apply(op: tuple[int, ...], value: int) -> int:
    out = 0
    bit = 0
    while value:
        if value & 1:
            out ^= op[bit]
        value >>= 1
        bit += 1
    return out


@lru_cache(maxsize=64)
def _power_op(log2: int) -> tuple[int, ...]:
    """Feed 2**log2 zero bytes."""
    if log2 == 0:
        return tuple((1 << j >> 8) ^ _TABLE_LIST[(1 << j) & 0xFF] for j in range(32))
    half = _power_op(log2 - 1)
    return tuple(_apply(half, column) for column in half)


def _compose_zeros(nbytes: int) -> tuple[int, ...]:
    columns = [1 << j for j in range(32)]
    bit = 0
    while nbytes:
        if nbytes & 1:
            op = _power_op(bit)
            columns = [_apply(op, c) for c in columns]
        nbytes >>= 1
        bit += 1
    return tuple(columns)


def _shift_zeros(register: int, nbytes: int) -> int:
    bit = 0
    while nbytes:
        if nbytes & 1:
            register = _apply(_power_op(bit), register)
        nbytes >>= 1
        bit += 1
    return register


@lru_cache(maxsize=8)
def _tables16(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Two 65536-entry tables applying 'feed nbytes zeros' to the low and high half of a register."""
    op = _zeros_op(nbytes)
    tables = []
    for base in (0, 16):
        table = np.zeros(1 << 16, dtype=np.uint32)
        for j in range(16):
            table[1 << j: 2 << j] = table[: 1 << j] ^ np.uint32(op[base + j])
        tables.append(table)
    return tables[0], tables[1]


@lru_cache(maxsize=32)
def _tables8(nbytes: int) -> tuple[np.ndarray, ...]:
    op = _zeros_op(nbytes)
    tables = []
    for base in (0, 8, 16, 24):
        table = np.zeros(256, dtype=np.uint32)
        for j in range(8):
            table[1 << j: 2 << j] = table[: 1 << j] ^ np.uint32(op[base + j])
        tables.append(table)
    return tuple(tables)


def _apply8(tables: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    t0, t1, t2, t3 = tables
    return t0[x & 0xFF] ^ t1[(x >> 8) & 0xFF] ^ t2[(x >> 16) & 0xFF] ^ t3[x >> 24]


_MIN_ROWS = 16
_MAX_LANES = 1 << 16


def _crc_lanes(register: int, words: np.ndarray) -> int:
    """Advance the raw register over ``words`` (R rows x L lanes of little-endian uint32).

    After all bytes, register = Z_n(register) ^ XOR_p Z_{n-4p}(word_p), Z_k = 'feed k zero
    bytes' (linear). Lane i gathers its words by Horner's rule over rows with Z_{4L}, the
    lanes are then folded pairwise (Z_4, Z_8, ... Z_{2L}) and the result shifted by Z_4.
    """
    rows, lanes = words.shape
    lo, hi = _tables16(4 * lanes)
    acc = words[0].astype(np.uint32, copy=True)
    index = np.empty(lanes, dtype=np.uint32)
    part = np.empty(lanes, dtype=np.uint32)
    for r in range(1, rows):
        np.bitwise_and(acc, 0xFFFF, out=index)
        np.take(lo, index, out=part)
        np.right_shift(acc, 16, out=index)
        np.take(hi, index, out=acc)
        acc ^= part
        acc ^= words[r]
    distance = 4
    while acc.size > 1:
        acc = _apply8(_tables8(distance), acc[0::2]) ^ acc[1::2]
        distance *= 2
    tree = _apply(_power_op(2), int(acc[0]))
    return _shift_zeros(register, 4 * rows * lanes) ^ tree


def _crc32c_numpy(data: Any, crc: int = 0) -> int:
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    register = crc ^ 0xFFFFFFFF
    start = 0
    n = buf.size
    while n - start >= 4 * _MIN_ROWS * 2:
        lanes = min(_MAX_LANES, 1 << ((n - start) // (4 * _MIN_ROWS)).bit_length() - 1)
        rows = (n - start) // (4 * lanes)
        end = start + 4 * lanes * rows
        words = buf[start:end].view("<u4").reshape(rows, lanes)
        register = _crc_lanes(register, words)
        start = end
    table = _TABLE_LIST
    for byte in buf[start:].tobytes():
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ 0xFFFFFFFF


def _native_crc32c() -> tuple[Callable[[Any, int], int] | None, str]:
    # ``crc32c`` takes any buffer (mmap views included) and releases the GIL; google_crc32c
    # would need a bytes copy of every tensor, so it is not used.
    try:
        import crc32c as _crc32c  # type: ignore[import-not-found, unused-ignore]  # optional (the tf extra)
    except ImportError:
        return None, "numpy"
    return (lambda data, crc=0: _crc32c.crc32c(data, crc)), "crc32c"


_NATIVE, CRC32C_IMPLEMENTATION = _native_crc32c()


def crc32c(data: Any, crc: int = 0) -> int:
    """CRC32C of a bytes-like object (continuing from ``crc``), unmasked."""
    if _NATIVE is not None:
        return _NATIVE(data, crc)
    return _crc32c_numpy(data, crc)
