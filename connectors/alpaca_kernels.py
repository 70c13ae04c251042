"""Numba kernels that read Alpaca's MessagePack trade frames straight into numpy columns.

A frame is an array of maps. `decode_trades` walks it byte by byte and fills one row per trade
message (keys T, S, i, x, p, s, t, c, z, and tks on crypto), without a Python object per
message. It accepts only what msgpack-python would decode to the very same trades: anything
else (a message that is not a trade, a field of another type, non-ASCII text, a map key that
is not a string, a truncated frame, bytes after the array) makes it answer FALLBACK, and the
caller decodes the frame the general way, which rejects what it must. Symbols are interned
in a `SymbolTable`; a symbol the table does not hold yet is reported back (UNKNOWN_SYMBOLS)
for the caller to check and add, then the frame is read again.
"""

from __future__ import annotations

from typing import Final

import numba
import numpy as np
from numpy.typing import NDArray

from connectors.msgpack_kernels import (
    MAX_TIMESTAMP_S,
    NS_PER_S,
    ascii_str_at,
    container_at,
    ieee754,
    number_at,
    put_decimal,
    skip_value,
    timestamp_ns_at,
    uint_at,
)

OK: Final = 0
FALLBACK: Final = 1
UNKNOWN_SYMBOLS: Final = 2

MAX_SYMBOL_BYTES: Final = 64  # symbols longer than this are rejected (shared.symbols), not here
NO_TRADE_ID: Final = np.iinfo(np.int64).min  # trade_id of a message without "i" (or nil)
_ID_TEXT_BYTES: Final = 21  # an int64 in decimal, its sign, and a separator

# The keys a trade message is read by; every other key's value is skipped.
_T, _S, _I, _P, _SIZE, _TIME, _TKS = 1, 2, 4, 8, 16, 32, 64
_REQUIRED: Final = _T | _S | _P | _SIZE | _TIME


class SymbolTable:
    """Symbols seen so far, by id, with an open-addressing hash table over their UTF-8 bytes.

    Only well-formed symbols are added (the caller checks them); ids never change, so a symbol
    costs a Python string once per connector, not once per trade.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.names: list[str] = []
        self.keys = np.zeros((capacity, MAX_SYMBOL_BYTES), dtype=np.uint8)
        self.lengths = np.zeros(capacity, dtype=np.int32)
        self.slots = np.full(2 * capacity, -1, dtype=np.int32)
        self.local = np.full(capacity, -1, dtype=np.int32)  # scratch of decode_trades

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str) -> None:
        """Intern `name` (ASCII, at most MAX_SYMBOL_BYTES bytes, not yet held)."""
        if len(self.names) == len(self.lengths):
            self._grow()
        raw = np.frombuffer(name.encode(), dtype=np.uint8)
        insert_symbol(
            slots=self.slots, keys=self.keys, lengths=self.lengths, key=raw, symbol_id=len(self)
        )
        self.names.append(name)

    def _grow(self) -> None:
        capacity = 2 * len(self.lengths)
        keys = np.zeros((capacity, MAX_SYMBOL_BYTES), dtype=np.uint8)
        keys[: len(self.keys)] = self.keys
        lengths = np.zeros(capacity, dtype=np.int32)
        lengths[: len(self.lengths)] = self.lengths
        slots = np.full(2 * capacity, -1, dtype=np.int32)
        for symbol_id in range(len(self.names)):
            key = keys[symbol_id, : lengths[symbol_id]]
            insert_symbol(slots=slots, keys=keys, lengths=lengths, key=key, symbol_id=symbol_id)
        self.keys, self.lengths, self.slots = keys, lengths, slots
        self.local = np.full(capacity, -1, dtype=np.int32)


@numba.njit(cache=True, nogil=True, inline="always")
def _hash(buf: NDArray[np.uint8], start: int, length: int) -> np.uint64:
    """FNV-1a over buf[start:start + length]."""
    h = np.uint64(14695981039346656037)
    for k in range(start, start + length):
        h = (h ^ np.uint64(buf[k])) * np.uint64(1099511628211)
    return h


@numba.njit(cache=True, nogil=True)
def insert_symbol(
    slots: NDArray[np.int32],
    keys: NDArray[np.uint8],
    lengths: NDArray[np.int32],
    key: NDArray[np.uint8],
    symbol_id: int,
) -> None:
    """Store `key` as `symbol_id` (slots keep at least half of them empty)."""
    mask = slots.shape[0] - 1
    slot = np.int64(_hash(key, 0, key.shape[0]) & np.uint64(mask))
    while slots[slot] >= 0:
        slot = (slot + 1) & mask
    slots[slot] = symbol_id
    keys[symbol_id, : key.shape[0]] = key
    lengths[symbol_id] = key.shape[0]


@numba.njit(cache=True, nogil=True, inline="always")
def _find(
    slots: NDArray[np.int32],
    keys: NDArray[np.uint8],
    lengths: NDArray[np.int32],
    buf: NDArray[np.uint8],
    start: int,
    length: int,
) -> int:
    """The id of the symbol buf[start:start + length], or -1."""
    mask = slots.shape[0] - 1
    slot = np.int64(_hash(buf, start, length) & np.uint64(mask))
    while True:
        symbol_id = int(slots[slot])
        if symbol_id < 0:
            return -1
        if lengths[symbol_id] == length:
            same = True
            for k in range(length):
                if keys[symbol_id, k] != buf[start + k]:
                    same = False
                    break
            if same:
                return symbol_id
        slot = (slot + 1) & mask


@numba.njit(cache=True, nogil=True)
def decode_trades(
    buf: NDArray[np.uint8],
    slots: NDArray[np.int32],
    keys: NDArray[np.uint8],
    lengths: NDArray[np.int32],
    local: NDArray[np.int32],
) -> tuple[
    int,
    int,
    int,
    NDArray[np.int32],
    NDArray[np.int32],
    NDArray[np.int64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.int8],
    NDArray[np.uint8],
    NDArray[np.int64],
]:
    """Read a frame of trade messages into columns, in frame order.

    Return (status, with_id, with_side, used, index, ts_event_us, price, size, side, id_text,
    unknown). On OK, trade k is of symbol `used[index[k]]` (symbol ids, in order of first use);
    `id_text` is the trade ids in decimal, one per trade, separated by spaces (empty where a
    message has none), so that one split makes their strings; `with_id` and `with_side` count
    the trades with an id and with a taker side. On UNKNOWN_SYMBOLS, `unknown` holds the (start,
    length) in `buf` of each symbol the table lacks, repeats included; on FALLBACK the columns
    mean nothing. `local` (one -1 per table entry) is scratch, left as it was found.
    """
    end = buf.shape[0]
    n, pos = container_at(buf, 0, end, 0x90, 0xDC)
    status = OK
    if n < 0 or n > end - pos:  # not an array, or one that cannot fit the frame
        n, status = 0, FALLBACK
    used = np.empty(n, dtype=np.int32)
    index = np.empty(n, dtype=np.int32)
    ts_us = np.empty(n, dtype=np.int64)
    price = np.empty(n, dtype=np.float64)
    size = np.empty(n, dtype=np.float64)
    side = np.zeros(n, dtype=np.int8)
    trade_id = np.empty(n, dtype=np.int64)
    id_text = np.empty(n * _ID_TEXT_BYTES, dtype=np.uint8)
    unknown = np.empty((n, 2), dtype=np.int64)
    n_used = 0
    n_unknown = 0
    for row in range(n):
        fields, pos = container_at(buf, pos, end, 0x80, 0xDE)
        if fields < 0:
            status = FALLBACK
            break
        seen = 0
        trade_id[row] = NO_TRADE_ID
        for _ in range(fields):
            if pos + 1 < end and buf[pos] == 0xA1 and buf[pos + 1] < 0x80:  # most keys
                key_start, key_length, pos = pos + 1, 1, pos + 2
            else:
                key_start, key_length, pos = ascii_str_at(buf, pos, end)
            if key_length == -2 and pos < end and 0xC4 <= buf[pos] <= 0xC6:
                pos = skip_value(buf, pos, end)  # a bin key: none of ours, its value is skipped
                if pos < 0:
                    status = FALLBACK
                    break
            elif key_length < 0:
                status = FALLBACK  # a key msgpack-python refuses, or text it must check
                break
            first = buf[key_start] if key_length > 0 else 0
            field = 0
            if key_length == 1:
                if first == 0x54:  # T
                    field = _T
                elif first == 0x53:  # S
                    field = _S
                elif first == 0x69:  # i
                    field = _I
                elif first == 0x70:  # p
                    field = _P
                elif first == 0x73:  # s
                    field = _SIZE
                elif first == 0x74:  # t
                    field = _TIME
            elif (
                key_length == 3
                and first == 0x74
                and buf[key_start + 1] == 0x6B
                and buf[key_start + 2] == 0x73
            ):
                field = _TKS
            if field & seen:
                status = FALLBACK  # a repeated key: the last one would win
                break
            seen |= field
            if field == _T and pos + 1 < end and buf[pos] == 0xA1 and buf[pos + 1] == 0x74:
                pos += 2  # "t": a trade
            elif field == _T:
                start, length, pos = ascii_str_at(buf, pos, end)
                if length != 1 or buf[start] != 0x74:  # "t": a trade
                    status = FALLBACK
                    break
            elif field == _S:
                start, length, pos = ascii_str_at(buf, pos, end)
                if length < 1 or length > MAX_SYMBOL_BYTES:
                    status = FALLBACK
                    break
                symbol = _find(slots, keys, lengths, buf, start, length)
                if symbol < 0:
                    unknown[n_unknown, 0] = start
                    unknown[n_unknown, 1] = length
                    n_unknown += 1
                    index[row] = 0
                else:
                    if local[symbol] < 0:
                        local[symbol] = n_used
                        used[n_used] = symbol
                        n_used += 1
                    index[row] = local[symbol]
            elif field == _P and pos + 9 <= end and buf[pos] == 0xCB:  # float64, as Alpaca's
                value = ieee754(uint_at(buf, pos + 1, 8), 11, 52)
                if not value > 0:
                    status = FALLBACK
                    break
                price[row] = value
                pos += 9
            elif field == _SIZE and pos < end and 0 < buf[pos] <= 0x7F:  # a small size
                size[row] = float(buf[pos])
                pos += 1
            elif field == _P or field == _SIZE:
                kind, _, value, pos = number_at(buf, pos, end)
                if kind == 0 or not value > 0:
                    status = FALLBACK
                    break
                if field == _P:
                    price[row] = value
                else:
                    size[row] = value
            elif field == _TIME and pos + 10 <= end and buf[pos] == 0xD7 and buf[pos + 1] == 0xFF:
                raw = uint_at(buf, pos + 2, 8)  # the 64-bit timestamp, as Alpaca's
                nsec = int(np.int64(raw >> np.uint64(34)))
                sec = int(np.int64(raw & np.uint64(0x3FFFFFFFF)))
                if nsec >= NS_PER_S or sec > MAX_TIMESTAMP_S:
                    status = FALLBACK
                    break
                ts_us[row] = (sec * NS_PER_S + nsec) // 1000
                pos += 10
            elif field == _TIME:
                ok, ns, pos = timestamp_ns_at(buf, pos, end)
                if not ok:
                    status = FALLBACK
                    break
                ts_us[row] = ns // 1000
            elif field == _I and pos + 9 <= end and buf[pos] == 0xCF:  # uint64, as Alpaca's
                raw = uint_at(buf, pos + 1, 8)
                if raw > np.uint64(0x7FFFFFFFFFFFFFFF):
                    status = FALLBACK
                    break
                trade_id[row] = np.int64(raw)
                pos += 9
            elif field == _I:
                if pos < end and buf[pos] == 0xC0:  # nil: no id
                    pos += 1
                else:
                    kind, value_id, _, after = number_at(buf, pos, end)
                    if kind != 1 or value_id == NO_TRADE_ID:
                        status = FALLBACK
                        break
                    trade_id[row] = value_id
                    pos = after
            elif field == _TKS:
                start, length, after = ascii_str_at(buf, pos, end)
                if length == 1 and buf[start] == 0x42:  # B
                    side[row] = 1
                elif length == 1 and buf[start] == 0x53:  # S
                    side[row] = -1
                if length >= 0:
                    pos = after
                elif length == -2:
                    pos = skip_value(buf, pos, end)  # not a str: no side
                else:
                    status = FALLBACK
                    break
            elif pos + 1 < end and buf[pos] == 0xA1 and buf[pos + 1] < 0x80:
                pos += 2  # a one-letter str (x, z): skipped
            else:
                pos = skip_value(buf, pos, end)
            if pos < 0:
                status = FALLBACK
                break
        if status == FALLBACK:
            break
        if seen & _REQUIRED != _REQUIRED:
            status = FALLBACK
            break
    if status == OK and pos != end:
        status = FALLBACK  # cut short, or bytes after the array
    for k in range(n_used):
        local[used[k]] = -1
    if status == OK and n_unknown:
        status = UNKNOWN_SYMBOLS
    with_id = 0
    with_side = 0
    text_end = 0
    if status == OK:
        for row in range(n):
            with_side += side[row] != 0
            if row:
                id_text[text_end] = 0x20
                text_end += 1
            if trade_id[row] != NO_TRADE_ID:
                with_id += 1
                text_end = put_decimal(id_text, text_end, trade_id[row])
    return (
        status,
        with_id,
        with_side,
        used[:n_used],
        index,
        ts_us,
        price,
        size,
        side,
        id_text[:text_end],
        unknown[:n_unknown],
    )
