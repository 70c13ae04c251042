"""Numba kernels for the Avro binary encoding of long/int arrays (zigzag varints).

Pure functions over numpy buffers, so that a column of a million trades is encoded or decoded
without a Python-level step per value. Doubles need no kernel: Avro stores them as
little-endian IEEE 754, which is numpy's `<f8` layout.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

MAX_VARINT_BYTES = 10


@numba.njit(cache=True, nogil=True, inline="always")
def put_varint(out: NDArray[np.uint8], pos: int, value: int) -> int:
    """Write `value` as a zigzag varint into `out` at `pos` (room for MAX_VARINT_BYTES); return
    the end position."""
    v = np.int64(value)
    z = np.uint64((v << 1) ^ (v >> 63))
    while z >= 0x80:
        out[pos] = np.uint8((z & 0x7F) | 0x80)
        z >>= 7
        pos += 1
    out[pos] = np.uint8(z)
    return pos + 1


@numba.njit(cache=True, nogil=True)
def encode_varints(values: NDArray[np.int64], out: NDArray[np.uint8], pos: int) -> int:
    """Write each value as a zigzag varint into `out` from `pos`; return the end position.

    `out` must have room for MAX_VARINT_BYTES per value.
    """
    for i in range(values.shape[0]):
        pos = put_varint(out, pos, values[i])
    return pos


@numba.njit(cache=True, nogil=True)
def decode_varints(
    buf: NDArray[np.uint8], pos: int, out: NDArray[np.int64], start: int, count: int
) -> int:
    """Read `count` zigzag varints from `buf` at `pos` into `out[start:]`; return the end position.

    Return -1 if the buffer ends early or a varint is longer than 10 bytes.
    """
    end = buf.shape[0]
    for i in range(count):
        z = np.uint64(0)
        shift = np.uint64(0)
        while True:
            if pos >= end or shift > 63:
                return -1
            b = np.uint64(buf[pos])
            pos += 1
            z |= (b & np.uint64(0x7F)) << shift
            if b < 0x80:
                break
            shift += np.uint64(7)
        out[start + i] = np.int64(z >> np.uint64(1)) ^ -np.int64(z & np.uint64(1))
    return pos
