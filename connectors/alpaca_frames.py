"""Alpaca market-data stream frames (v2 stocks, v1beta3 crypto) to trade batches and control
messages; no sockets here.

Every frame is an array of messages, each with its type in "T": control messages (`success`,
`subscription`, `error`) and data (`t` trades, `q` quotes, `b` bars, `u` updated bars, `d`
daily bars, `s` statuses (to md.statuses.v1), `l` LULD bands, `c` corrections, `x` cancel errors, `o` orderbooks).
Frames come as JSON text or, when the client asked for it at connect, as MessagePack, whose
timestamps are the format's timestamp extension rather than RFC 3339 strings. The trades of a
frame become one TradeBatch; a message that does not parse is rejected alone, the rest kept.

`decode_frame` reads any frame through Python objects. `FrameDecoder`, what the connector
uses, first tries the numba walk of connectors.alpaca_kernels on a MessagePack frame, which
takes frames of well-formed trades only, and hands every other frame to `decode_frame`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import msgpack
import numpy as np
import orjson

from connectors.alpaca_kernels import OK, UNKNOWN_SYMBOLS, SymbolTable, decode_trades
from connectors.base import Rejected
from shared.models import InstrumentStatus, ProviderBarBatch, QuoteBatch, Side, TradeBatch
from shared.symbols import symbol_problem

CONTROL_TYPES: Final = frozenset({"success", "subscription", "error"})
# Bars: minute bars (b), their later corrections (u: updatedBars), daily bars (d: sent again
# as the day goes on), as our interval names.
BAR_TYPES: Final = {"b": "1m", "u": "1m", "d": "1d"}
# Data Alpaca sends that this connector does not publish (yet): counted, never rejected.
# Corrections (c) and cancel errors (x) come with a trades subscription: our bars keep a
# corrected or cancelled trade as first reported.
UNPUBLISHED_TYPES: Final = frozenset({"l", "c", "x", "o"})
# Trading status codes (CTA and UTP, as Alpaca passes them on) under which no trades print: a
# halt, a volatility pause, quotes resumed before trading does.
HALTED_CODES: Final = frozenset({"H", "P", "Q"})
TAKER_SIDE: Final = {"B": Side.BUY, "S": Side.SELL}
INT64_MIN: Final = -(2**63)  # MessagePack times beyond an int64 of nanoseconds are no time
INT64_MAX: Final = 2**63 - 1
MAX_INTERNED_SYMBOLS: Final = 1 << 16  # beyond: frames with new symbols go through decode_frame


@dataclass(frozen=True, slots=True)
class Control:
    """A control message: `success` (msg connected/authenticated), `subscription` (the
    channels now subscribed) or `error` (code and msg)."""

    kind: str
    body: Mapping[str, Any]

    @property
    def code(self) -> int | None:
        code = self.body.get("code")
        return code if isinstance(code, int) else None

    @property
    def message(self) -> str:
        return str(self.body.get("msg", ""))


@dataclass(slots=True)
class Frame:
    """What one frame held: its trades as one batch (None without trades), its control
    messages, the messages rejected, and how many data messages were of unpublished types."""

    trades: TradeBatch | None = None
    quotes: QuoteBatch | None = None
    bars: dict[str, ProviderBarBatch] = field(default_factory=dict)  # by type: b, u, d
    controls: list[Control] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    statuses: list[InstrumentStatus] = field(default_factory=list)
    unpublished: int = 0


def unpack(payload: bytes | str) -> Any:
    """Decode a frame: text frames are JSON, binary ones MessagePack (timestamps as int ns)."""
    if isinstance(payload, str):
        return orjson.loads(payload)
    return msgpack.unpackb(payload, timestamp=2)


def decode_frame(payload: bytes | str, source: str, recv_us: int) -> Frame:
    """Parse one frame received at `recv_us`; never raises for bad input."""
    raw = payload.encode() if isinstance(payload, str) else payload
    frame = Frame()
    try:
        messages = unpack(payload)
    except (orjson.JSONDecodeError, ValueError, msgpack.UnpackException) as exc:
        frame.rejected.append(Rejected("undecodable", f"not JSON or MessagePack: {exc}", raw))
        return frame
    if not isinstance(messages, list):
        got = type(messages).__name__
        frame.rejected.append(Rejected("malformed_frame", f"a frame is an array, not {got}", raw))
        return frame
    trades = _Trades()
    bars = {kind: _Bars() for kind in BAR_TYPES}
    quotes = _Quotes()
    for message in messages:
        kind = message.get("T") if isinstance(message, dict) else None
        if not isinstance(kind, str):
            kind = None
        if kind == "t":
            problem = trades.add(message)
            if problem:
                frame.rejected.append(Rejected("malformed_trade", problem, _encode(message)))
        elif kind == "q":
            problem = quotes.add(message)
            if problem:
                frame.rejected.append(Rejected("malformed_quote", problem, _encode(message)))
        elif kind in BAR_TYPES:
            problem = bars[kind].add(message)
            if problem:
                frame.rejected.append(Rejected("malformed_bar", problem, _encode(message)))
        elif kind == "s":
            status = _status(message, source, recv_us)
            if isinstance(status, str):
                frame.rejected.append(Rejected("malformed_status", status, _encode(message)))
            else:
                frame.statuses.append(status)
        elif kind in CONTROL_TYPES:
            frame.controls.append(Control(str(kind), message))
        elif kind in UNPUBLISHED_TYPES:
            frame.unpublished += 1
        else:
            detail = f"unknown message type {kind!r}" if kind else "a message without a type"
            frame.rejected.append(Rejected("unknown_message_type", detail, _encode(message)))
    frame.trades = trades.batch(source, recv_us)
    frame.quotes = quotes.batch(source, recv_us)
    for kind, found in bars.items():
        if found.rows:
            frame.bars[kind] = found.batch(source, BAR_TYPES[kind], recv_us)
    return frame


class FrameDecoder:
    """Decode a connection's frames as `decode_frame` does, MessagePack frames of trades alone
    without a Python object per message; symbols are interned across frames."""

    def __init__(self) -> None:
        self.symbols = SymbolTable()

    @staticmethod
    def warm_up() -> None:
        """Compile the kernels, or load them from numba's cache, now rather than on a first
        frame (seconds the first time on a machine; the connector does it as it is built)."""
        trade = {"T": "t", "S": "A", "p": 1.0, "s": 1, "t": msgpack.Timestamp(0, 0)}
        FrameDecoder().only_trades(msgpack.packb([trade]), "warm-up", 0)

    def decode(self, payload: bytes | str, source: str, recv_us: int) -> Frame:
        """Parse one frame received at `recv_us`; never raises for bad input."""
        if isinstance(payload, bytes):
            trades = self.only_trades(payload, source, recv_us)
            if trades is not None:
                return Frame(trades=trades if len(trades) else None)
        return decode_frame(payload, source, recv_us)

    def only_trades(self, payload: bytes, source: str, recv_us: int) -> TradeBatch | None:
        """The trades of a MessagePack frame that holds nothing but well-formed trades, read by
        the kernel; None for any other frame."""
        table = self.symbols
        buf = np.frombuffer(payload, dtype=np.uint8)
        while True:
            status, with_id, with_side, used, index, ts_us, price, size, side, id_text, unknown = (
                decode_trades(
                    buf=buf,
                    slots=table.slots,
                    keys=table.keys,
                    lengths=table.lengths,
                    local=table.local,
                )
            )
            if status != UNKNOWN_SYMBOLS:
                break
            if not self._intern(payload, unknown.tolist()):
                return None
        if status != OK:
            return None
        names = table.names
        n = len(index)
        trade_id = tuple(id_text.tobytes().decode().split(" ")) if with_id else None
        return TradeBatch(
            source=source,
            instruments=tuple([names[i] for i in used.tolist()]),
            instrument_index=index,
            ts_event_us=ts_us,
            ts_recv_us=np.full(n, recv_us, dtype=np.int64),
            price=price,
            size=size,
            side=side if with_side else None,
            trade_id=trade_id,
        )

    def _intern(self, payload: bytes, unknown: list[list[int]]) -> bool:
        """Add the symbols at (start, length) of `payload`; False if one is not well formed
        (decode_frame rejects its trade) or the table is full."""
        for start, length in unknown:
            name = payload[start : start + length].decode("ascii")
            if name in self.symbols.names[-len(unknown) :]:
                continue  # a repeat within the frame, added just now
            if symbol_problem(name) or len(self.symbols) >= MAX_INTERNED_SYMBOLS:
                return False
            self.symbols.add(name)
        return True


class _Quotes:
    """Rows of a frame's quotes: bp, bs (bid price, size), ap, as (ask), t."""

    def __init__(self) -> None:
        self.symbols: dict[str, int] = {}
        self.rows: list[tuple[int, int, float, float, float, float]] = []

    def add(self, message: dict[str, Any]) -> str | None:
        symbol = message.get("S")
        if not isinstance(symbol, str) or symbol_problem(symbol):
            return f"S {symbol!r} is not a symbol"
        values = [message.get(k) for k in ("bp", "bs", "ap", "as")]
        if not all(_number(v) and v >= 0 for v in values):
            return f"bp, bs, ap, as {values!r} are not all numbers >= 0"
        ts_ns = _timestamp_ns(message.get("t"))
        if ts_ns is None:
            return f"t {message.get('t')!r} is not an RFC 3339 time"
        bid, bid_size, ask, ask_size = (float(v) for v in values)  # type: ignore[arg-type]
        index = self.symbols.setdefault(symbol, len(self.symbols))
        self.rows.append((index, ts_ns // 1000, bid, bid_size, ask, ask_size))
        return None

    def batch(self, source: str, recv_us: int) -> QuoteBatch | None:
        if not self.rows:
            return None
        columns = list(zip(*self.rows, strict=True))
        return QuoteBatch(
            source=source,
            instruments=tuple(self.symbols),
            instrument_index=np.array(columns[0], dtype=np.int32),
            ts_event_us=np.array(columns[1], dtype=np.int64),
            ts_recv_us=np.full(len(self.rows), recv_us, dtype=np.int64),
            bid_price=np.array(columns[2]),
            bid_size=np.array(columns[3]),
            ask_price=np.array(columns[4]),
            ask_size=np.array(columns[5]),
        )


class _Bars:
    """Rows of a frame's bars of one type: o, h, l, c, v, t, n (trades) and vw (VWAP)."""

    def __init__(self) -> None:
        self.symbols: dict[str, int] = {}
        self.rows: list[tuple[int, int, float, float, float, float, float, float, int]] = []

    def add(self, message: dict[str, Any]) -> str | None:
        symbol = message.get("S")
        if not isinstance(symbol, str) or symbol_problem(symbol):
            return f"S {symbol!r} is not a symbol"
        prices = [message.get(k) for k in ("o", "h", "l", "c")]
        if not all(_positive_number(p) for p in prices):
            return f"o, h, l, c {prices!r} are not all positive numbers"
        volume, vwap, count = message.get("v"), message.get("vw"), message.get("n")
        if not isinstance(volume, int | float) or isinstance(volume, bool) or volume < 0:
            return f"v {volume!r} is not a volume"
        ts_ns = _timestamp_ns(message.get("t"))
        if ts_ns is None:
            return f"t {message.get('t')!r} is not an RFC 3339 time"
        o, h, low, c = (float(p) for p in prices)  # type: ignore[arg-type]
        self.rows.append(
            (
                self.symbols.setdefault(symbol, len(self.symbols)),
                ts_ns // 1000,
                o,
                h,
                low,
                c,
                float(volume),
                float(vwap) if _positive_number(vwap) else float("nan"),
                count if isinstance(count, int) and not isinstance(count, bool) else -1,
            )
        )
        return None

    def batch(self, source: str, interval: str, recv_us: int) -> ProviderBarBatch:
        columns = list(zip(*self.rows, strict=True))
        return ProviderBarBatch(
            source=source,
            provider="alpaca",
            interval=interval,
            instruments=tuple(self.symbols),
            instrument_index=np.array(columns[0], dtype=np.int32),
            ts_us=np.array(columns[1], dtype=np.int64),
            open=np.array(columns[2]),
            high=np.array(columns[3]),
            low=np.array(columns[4]),
            close=np.array(columns[5]),
            volume=np.array(columns[6]),
            vwap=np.array(columns[7]),
            trade_count=np.array(columns[8], dtype=np.int64),
            revision=np.zeros(len(self.rows), dtype=np.int32),
            ts_recv_us=recv_us,
        )


class _Trades:
    """Columns of a frame's trades, filled message by message."""

    def __init__(self) -> None:
        self.symbols: dict[str, int] = {}
        self.index: list[int] = []
        self.ts_ns: list[int] = []
        self.price: list[float] = []
        self.size: list[float] = []
        self.side: list[int] = []
        self.trade_id: list[str] = []

    def add(self, message: dict[str, Any]) -> str | None:
        """Append the trade, or return why it cannot be one."""
        symbol, price, size = message.get("S"), message.get("p"), message.get("s")
        if not isinstance(symbol, str) or (problem := symbol_problem(symbol)):
            return f"S {symbol!r}: {'not a string' if not isinstance(symbol, str) else problem}"
        if not _positive_number(price):
            return f"p {price!r} is not a positive number"
        if not _positive_number(size):
            return f"s {size!r} is not a positive number"
        ts_ns = _timestamp_ns(message.get("t"))
        if ts_ns is None:
            return f"t {message.get('t')!r} is not an RFC 3339 time"
        self.index.append(self.symbols.setdefault(symbol, len(self.symbols)))
        self.ts_ns.append(ts_ns)
        self.price.append(float(price))
        self.size.append(float(size))
        taker = message.get("tks")
        self.side.append(TAKER_SIDE.get(taker, Side.UNKNOWN) if isinstance(taker, str) else 0)
        trade_id = message.get("i")
        self.trade_id.append("" if trade_id is None else str(trade_id))
        return None

    def batch(self, source: str, recv_us: int) -> TradeBatch | None:
        if not self.index:
            return None
        n = len(self.index)
        return TradeBatch(
            source=source,
            instruments=tuple(self.symbols),
            instrument_index=np.array(self.index, dtype=np.int32),
            ts_event_us=np.array(self.ts_ns, dtype=np.int64) // 1000,
            ts_recv_us=np.full(n, recv_us, dtype=np.int64),
            price=np.array(self.price, dtype=np.float64),
            size=np.array(self.size, dtype=np.float64),
            side=np.array(self.side, dtype=np.int8) if any(self.side) else None,
            trade_id=tuple(self.trade_id) if any(self.trade_id) else None,
        )


def _status(message: dict[str, Any], source: str, recv_us: int) -> InstrumentStatus | str:
    """A trading status message (S, sc, sm, rc, rm, t), or what is wrong with it."""
    symbol, code = message.get("S"), message.get("sc")
    if not isinstance(symbol, str) or symbol_problem(symbol):
        return f"S {symbol!r} is not a symbol"
    if not isinstance(code, str) or not code:
        return f"sc {code!r} is not a status code"
    texts = [message.get(k, "") for k in ("sm", "rc", "rm")]
    if not all(isinstance(t, str) for t in texts):
        return f"sm, rc, rm {texts!r} are not all strings"
    ts_ns = _timestamp_ns(message.get("t"))
    if ts_ns is None:
        return f"t {message.get('t')!r} is not an RFC 3339 time"
    status, reason_code, reason = (str(t) for t in texts)
    return InstrumentStatus(
        symbol,
        code in HALTED_CODES,
        code,
        status,
        reason_code,
        reason,
        source,
        ts_ns // 1000,
        recv_us,
    )


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _timestamp_ns(value: object) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 UTC string (JSON) or an int (MessagePack)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if INT64_MIN <= value <= INT64_MAX else None
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        # numpy parses ISO 8601 to nanoseconds in C; Alpaca's times are UTC ("Z")
        parsed = np.datetime64(value[:-1], "ns")
    except ValueError:
        return None
    return None if np.isnat(parsed) else int(parsed.astype(np.int64))


def _encode(message: object) -> bytes:
    """The message as JSON, for a dead letter (MessagePack timestamps are ints by then)."""
    try:
        return orjson.dumps(message, default=str)
    except TypeError:  # an integer orjson cannot write (beyond 64 bits), or a bytes key
        pass
    try:
        return json.dumps(message, default=str).encode()
    except TypeError:  # a MessagePack map key that JSON cannot hold (bytes)
        return repr(message).encode()
