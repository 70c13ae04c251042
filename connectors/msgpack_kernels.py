"""Numba readers of MessagePack values in a byte buffer, for kernels that walk a frame without
building Python objects (connectors.alpaca_kernels).

Each reader takes the buffer, the position of a value and the end of the buffer, and returns
what it read with the position after it; a value of another type, or one cut short, is
reported (never read past `end`), so that the caller can leave the frame to msgpack-python.
Text is taken only when it is ASCII: other UTF-8 would need the checks msgpack-python makes.
"""

from __future__ import annotations

import math
from typing import Final

import numba
import numpy as np
from numpy.typing import NDArray

NS_PER_S: Final = 1_000_000_000
MAX_TIMESTAMP_S: Final = 9_223_372_035  # seconds whose nanoseconds fit an int64, with room for nsec
TIMESTAMP_EXT: Final = 0xFF  # the timestamp extension's type, -1


@numba.njit(cache=True, nogil=True, inline="always")
def uint_at(buf: NDArray[np.uint8], pos: int, nbytes: int) -> np.uint64:
    """The big-endian unsigned integer of `nbytes` bytes at `pos` (bounds checked by the caller)."""
    value = np.uint64(0)
    for k in range(nbytes):
        value = (value << np.uint64(8)) | np.uint64(buf[pos + k])
    return value


@numba.njit(cache=True, nogil=True, inline="always")
def length_at(buf: NDArray[np.uint8], pos: int, nbytes: int) -> int:
    """The big-endian length or count of `nbytes` (at most 4) bytes at `pos`."""
    return int(np.int64(uint_at(buf, pos, nbytes)))


@numba.njit(cache=True, nogil=True)
def container_at(
    buf: NDArray[np.uint8], pos: int, end: int, fix: int, wide: int
) -> tuple[int, int]:
    """(count, position after the header) of an array (fix 0x90, wide 0xdc) or a map (0x80,
    0xde) at `pos`; count -1 if it is none or is cut short."""
    if pos >= end:
        return -1, pos
    b = buf[pos]
    if fix <= b <= fix + 0x0F:
        return int(b) - fix, pos + 1
    if b == wide and pos + 3 <= end:
        return length_at(buf, pos + 1, 2), pos + 3
    if b == wide + 1 and pos + 5 <= end:
        return length_at(buf, pos + 1, 4), pos + 5
    return -1, pos


@numba.njit(cache=True, nogil=True)
def ascii_str_at(buf: NDArray[np.uint8], pos: int, end: int) -> tuple[int, int, int]:
    """(start, length, position after) of a str at `pos` whose bytes are all ASCII; length -2 if
    the value is not a str, -1 if it is cut short or not ASCII (msgpack-python would have to
    check its UTF-8)."""
    if pos >= end:
        return 0, -1, pos
    b = buf[pos]
    if 0xA0 <= b <= 0xBF:
        start, length = pos + 1, int(b - 0xA0)
    elif b == 0xD9 and pos + 2 <= end:
        start, length = pos + 2, int(buf[pos + 1])
    elif b == 0xDA and pos + 3 <= end:
        start, length = pos + 3, length_at(buf, pos + 1, 2)
    elif b == 0xDB and pos + 5 <= end:
        start, length = pos + 5, length_at(buf, pos + 1, 4)
    elif 0xD9 <= b <= 0xDB:
        return 0, -1, pos
    else:
        return 0, -2, pos
    if start + length > end:
        return 0, -1, pos
    for k in range(start, start + length):
        if buf[k] >= 0x80:
            return 0, -1, pos
    return start, length, start + length


@numba.njit(cache=True, nogil=True)
def number_at(buf: NDArray[np.uint8], pos: int, end: int) -> tuple[int, int, float, int]:
    """(kind, int value, float value, position after) of a number at `pos`: kind 1 an integer
    that fits an int64, 2 a float or a larger uint64 (its float value only), 0 anything else."""
    if pos >= end:
        return 0, 0, 0.0, pos
    b = buf[pos]
    if b <= 0x7F:
        return 1, int(b), float(b), pos + 1
    if b >= 0xE0:
        value = int(b) - 256
        return 1, value, float(value), pos + 1
    if 0xCC <= b <= 0xD3:
        nbytes = 1 << ((b - 0xCC) & 3)
        if pos + 1 + nbytes > end:
            return 0, 0, 0.0, pos
        raw = uint_at(buf, pos + 1, nbytes)
        if b <= 0xCF:  # uint8 .. uint64
            if raw > np.uint64(0x7FFFFFFFFFFFFFFF):
                return 2, 0, float(raw), pos + 1 + nbytes
            return 1, int(np.int64(raw)), float(np.int64(raw)), pos + 1 + nbytes
        bits = 8 * nbytes  # int8 .. int64: two's complement
        signed = np.int64(raw)
        if bits < 64 and raw >= np.uint64(1) << np.uint64(bits - 1):
            signed = np.int64(raw) - (np.int64(1) << np.int64(bits))
        return 1, int(signed), float(signed), pos + 1 + nbytes
    if b == 0xCA and pos + 5 <= end:
        return 2, 0, ieee754(uint_at(buf, pos + 1, 4), 8, 23), pos + 5
    if b == 0xCB and pos + 9 <= end:
        return 2, 0, ieee754(uint_at(buf, pos + 1, 8), 11, 52), pos + 9
    return 0, 0, 0.0, pos


@numba.njit(cache=True, nogil=True, inline="always")
def ieee754(raw: np.uint64, exponent_bits: int, fraction_bits: int) -> float:
    """The value of a binary32 (8, 23) or binary64 (11, 52) float from its bits, exactly."""
    top = (1 << exponent_bits) - 1
    exponent = int(np.int64((raw >> np.uint64(fraction_bits)) & np.uint64(top)))
    fraction = raw & ((np.uint64(1) << np.uint64(fraction_bits)) - np.uint64(1))
    bias = (top >> 1) + fraction_bits
    if exponent == top:
        value = math.inf if fraction == 0 else math.nan
    elif exponent == 0:
        value = math.ldexp(float(fraction), 1 - bias)
    else:
        value = math.ldexp(
            float(fraction | (np.uint64(1) << np.uint64(fraction_bits))), exponent - bias
        )
    return -value if raw >> np.uint64(exponent_bits + fraction_bits) else value


@numba.njit(cache=True, nogil=True)
def timestamp_ns_at(buf: NDArray[np.uint8], pos: int, end: int) -> tuple[bool, int, int]:
    """(ok, nanoseconds since the epoch, position after) of a timestamp extension (32, 64 or
    96 bit) or a plain integer (nanoseconds, as msgpack-python leaves it) at `pos`."""
    if pos >= end:
        return False, 0, pos
    b = buf[pos]
    if b == 0xD6 and pos + 6 <= end and buf[pos + 1] == TIMESTAMP_EXT:
        return True, length_at(buf, pos + 2, 4) * NS_PER_S, pos + 6
    if b == 0xD7 and pos + 10 <= end and buf[pos + 1] == TIMESTAMP_EXT:
        raw = uint_at(buf, pos + 2, 8)
        nsec = int(np.int64(raw >> np.uint64(34)))
        sec = int(np.int64(raw & np.uint64(0x3FFFFFFFF)))
        if nsec >= NS_PER_S or sec > MAX_TIMESTAMP_S:
            return False, 0, pos
        return True, sec * NS_PER_S + nsec, pos + 10
    if b == 0xC7 and pos + 15 <= end and buf[pos + 1] == 12 and buf[pos + 2] == TIMESTAMP_EXT:
        nsec = length_at(buf, pos + 3, 4)
        sec = int(np.int64(uint_at(buf, pos + 7, 8)))
        if nsec >= NS_PER_S or not -MAX_TIMESTAMP_S <= sec <= MAX_TIMESTAMP_S:
            return False, 0, pos
        return True, sec * NS_PER_S + nsec, pos + 15
    kind, value, _, after = number_at(buf, pos, end)
    if kind == 1:
        return True, value, after
    return False, 0, pos


@numba.njit(cache=True, nogil=True)
def skip_value(buf: NDArray[np.uint8], pos: int, end: int) -> int:
    """The position after the value at `pos`, or -1 if it is cut short or holds a map, an
    extension or non-ASCII text (values whose checks are left to msgpack-python)."""
    remaining = 1
    while remaining > 0:
        if pos >= end or remaining > end - pos:
            return -1
        remaining -= 1
        b = buf[pos]
        if b <= 0x7F or b >= 0xE0 or b == 0xC0 or b == 0xC2 or b == 0xC3:
            pos += 1
        elif 0xA0 <= b <= 0xBF or 0xD9 <= b <= 0xDB:
            _, length, after = ascii_str_at(buf, pos, end)
            if length < 0:
                return -1
            pos = after
        elif 0xC4 <= b <= 0xC6:  # bin8, bin16, bin32
            nbytes = 1 << (b - 0xC4)
            if pos + 1 + nbytes > end:
                return -1
            pos += 1 + nbytes + length_at(buf, pos + 1, nbytes)
        elif 0xCA <= b <= 0xD3:
            kind, _, _, after = number_at(buf, pos, end)
            if kind == 0:
                return -1
            pos = after
        elif 0x90 <= b <= 0x9F or b == 0xDC or b == 0xDD:
            count, after = container_at(buf, pos, end, 0x90, 0xDC)
            if count < 0:
                return -1
            remaining += count
            pos = after
        else:  # maps, extensions, 0xc1
            return -1
    return pos if pos <= end else -1


@numba.njit(cache=True, nogil=True, inline="always")
def put_decimal(out: NDArray[np.uint8], pos: int, value: int) -> int:
    """Write `value` in decimal at `pos` (room for 20 bytes); return the end position."""
    if value < 0:
        out[pos] = 0x2D  # -
        pos += 1
    magnitude = np.uint64(value) if value >= 0 else np.uint64(-(value + 1)) + np.uint64(1)
    digits = 1
    probe = magnitude
    while probe >= np.uint64(10):
        probe //= np.uint64(10)
        digits += 1
    for k in range(digits - 1, -1, -1):
        out[pos + k] = np.uint8(np.uint64(0x30) + magnitude % np.uint64(10))
        magnitude //= np.uint64(10)
    return pos + digits
