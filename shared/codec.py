"""Avro encoding of our records, framed the Confluent way so stock deserializers read them.

A message is the magic byte 0, a 4-byte big-endian schema id, then the Avro body. TradeBatch,
the hot path, is encoded and decoded column by column with numba kernels and numpy, byte for
byte what fastavro writes; the other records go through fastavro. A message written with an
older committed version of a schema is read through fastavro's schema resolution.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, Final, cast

import fastavro
import numpy as np
from fastavro.read import SchemaResolutionError
from numpy.typing import NDArray

from shared.avro_kernels import MAX_VARINT_BYTES, decode_varints, encode_varints
from shared.bar_fields import BAR_FIELDS
from shared.errors import DecodeError
from shared.intervals import parse_interval
from shared.models import (
    Arbitrage,
    ArbitrageDirection,
    ArbitrageLeg,
    Bar,
    BarBatch,
    DeadLetter,
    FeedEvent,
    FundamentalStatement,
    Gap,
    GapCause,
    InstrumentStatus,
    Listing,
    ListingStatus,
    Match,
    MatchDecider,
    MatchDecision,
    PmPriceBatch,
    ProviderBarBatch,
    QuoteBatch,
    TradeBatch,
)
from shared.schema_ids import SchemaRegistry

MAGIC: Final = 0
HEADER: Final = struct.Struct(">bI")

TRADE_BATCH: Final = "trade_batch"
DEAD_LETTER: Final = "dead_letter"
BAR: Final = "bar"
BAR_BATCH: Final = "bar_batch"
PROVIDER_BAR_BATCH: Final = "provider_bar_batch"
EPOCH_DATE: Final = date(1970, 1, 1)
FUNDAMENTAL_STATEMENT: Final = "fundamental_statement"
FEED_EVENT: Final = "feed_event"
QUOTE_BATCH: Final = "quote_batch"
GAP: Final = "gap"
INSTRUMENT_STATUS: Final = "instrument_status"
LISTING: Final = "listing"
PM_PRICE_BATCH: Final = "pm_price_batch"
MATCH: Final = "match"
ARBITRAGE: Final = "arbitrage"


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the Confluent wire-format header."""
    return HEADER.pack(MAGIC, schema_id) + body


def unframe(data: bytes) -> tuple[int, memoryview]:
    """Split a Confluent-framed message into schema id and body; raise DecodeError if not framed."""
    if len(data) < HEADER.size or data[0] != MAGIC:
        raise DecodeError(
            "not a Confluent-framed Avro message (magic byte 0 and schema id missing)"
        )
    _, schema_id = HEADER.unpack_from(data)
    return schema_id, memoryview(data)[HEADER.size :]


def _encode_long(value: int) -> bytes:
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_string(value: str) -> bytes:
    """Avro string: the UTF-8 length as a zigzag varint, then the bytes."""
    raw = value.encode()
    return _encode_long(len(raw)) + raw


def _encode_strings(values: tuple[str, ...]) -> bytes:
    if not values:
        return b"\x00"
    return _encode_long(len(values)) + b"".join(encode_string(v) for v in values) + b"\x00"


def _encode_longs(values: NDArray[Any]) -> bytes:
    if len(values) == 0:
        return b"\x00"
    out = np.empty(len(values) * MAX_VARINT_BYTES, dtype=np.uint8)
    end = encode_varints(values.astype(np.int64, copy=False), out, 0)
    return _encode_long(len(values)) + out[:end].tobytes() + b"\x00"


def _encode_doubles(values: NDArray[np.float64]) -> bytes:
    if len(values) == 0:
        return b"\x00"
    return _encode_long(len(values)) + values.astype("<f8", copy=False).tobytes() + b"\x00"


def encode_trade_batch_body(batch: TradeBatch) -> bytes:
    """Return the Avro body of a TradeBatch, identical to fastavro's schemaless_writer output."""
    parts = [
        encode_string(batch.source),
        _encode_strings(batch.instruments),
        _encode_longs(batch.instrument_index),
        _encode_longs(batch.ts_event_us),
        _encode_longs(batch.ts_recv_us),
        _encode_doubles(batch.price),
        _encode_doubles(batch.size),
        b"\x00" if batch.side is None else b"\x02" + _encode_longs(batch.side),
        b"\x00" if batch.trade_id is None else b"\x02" + _encode_strings(batch.trade_id),
        _encode_long(batch.watermark_us),
        b"\x00" if batch.provider is None else b"\x02" + encode_string(batch.provider),
    ]
    return b"".join(parts)


def _used(names: Sequence[str], index: NDArray[np.int64]) -> tuple[tuple[str, ...], NDArray[Any]]:
    """Cut a dictionary to the names `index` uses; return it and the index into it."""
    used, inverse = np.unique(index, return_inverse=True)
    return tuple(names[i] for i in used.tolist()), inverse


def encode_bar_batch_body(batch: BarBatch) -> bytes:
    """Return the Avro body of a BarBatch (dictionaries cut to what its bars use), identical to
    fastavro's schemaless_writer output."""
    instruments, instrument_index = _used(batch.instruments, batch.instrument_index)
    intervals, interval_index = _used(batch.intervals, batch.interval_index)
    sources, source_index = _used(batch.sources, batch.source_index)
    d = batch.doubles
    parts = [
        _encode_strings(instruments),
        _encode_strings(intervals),
        _encode_strings(sources),
        _encode_longs(instrument_index),
        _encode_longs(interval_index),
        _encode_longs(source_index),
        _encode_longs(batch.ts_us),
        _encode_longs(batch.revision),
        *(_encode_doubles(d[:, column]) for column in range(6)),  # open .. vwap
        _encode_longs(batch.trade_count),
        _encode_doubles(d[:, 6]),  # buy_volume
        _encode_doubles(d[:, 7]),  # sell_volume
        _encode_longs(batch.ts_event_us),
        _encode_longs(batch.seq),
        _encode_long(batch.ts_recv_us),
    ]
    return b"".join(parts)


def decode_bar_batch_body(body: memoryview) -> BarBatch:
    """Read a BarBatch body written with the current schema; raise DecodeError if malformed."""
    r = _Reader(body)
    instruments, intervals, sources = r.strings(), r.strings(), r.strings()
    instrument_index, interval_index, source_index = r.longs(), r.longs(), r.longs()
    ts, revision = r.longs(), r.longs()
    prices_volume_vwap = [r.doubles() for _ in range(6)]
    trade_count = r.longs()
    buy, sell = r.doubles(), r.doubles()
    ts_event, seq = r.longs(), r.longs()
    ts_recv = r.long()
    if r.pos != len(r.buf):
        raise DecodeError(f"{len(r.buf) - r.pos} unexpected bytes after the BarBatch")
    doubles = [*prices_volume_vwap, buy, sell]
    columns = [instrument_index, interval_index, source_index, ts, revision, trade_count]
    lengths = {len(c) for c in [*columns, ts_event, seq, *doubles]}
    if len(lengths) > 1:
        raise DecodeError(f"BarBatch columns have different lengths: {sorted(lengths)}")
    for index, names in (
        (instrument_index, instruments),
        (interval_index, intervals),
        (source_index, sources),
    ):
        if len(index) and (index.min() < 0 or index.max() >= len(names)):
            raise DecodeError(f"a BarBatch index points outside its {len(names)} names")
    return BarBatch(
        instruments=instruments,
        intervals=intervals,
        sources=sources,
        instrument_index=instrument_index,
        interval_index=interval_index,
        source_index=source_index,
        ts_us=ts,
        revision=revision,
        trade_count=trade_count,
        ts_event_us=ts_event,
        seq=seq,
        doubles=np.column_stack(doubles) if len(ts) else np.empty((0, len(doubles))),
        ts_recv_us=ts_recv,
    )


def _joined(blocks: list[NDArray[Any]], dtype: type) -> NDArray[Any]:
    if not blocks:
        return np.empty(0, dtype=dtype)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


class _Reader:
    """Cursor over an Avro body; every read raises DecodeError past the end."""

    def __init__(self, body: memoryview) -> None:
        self.buf = np.frombuffer(body, dtype=np.uint8)
        self.raw = body
        self.pos = 0

    def long(self) -> int:
        z = shift = 0
        while True:
            if self.pos >= len(self.buf) or shift > 63:
                raise DecodeError(f"truncated or overlong varint at byte {self.pos}")
            b = int(self.buf[self.pos])
            self.pos += 1
            z |= (b & 0x7F) << shift
            if b < 0x80:
                return (z >> 1) ^ -(z & 1)
            shift += 7

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise DecodeError(f"field of {n} bytes runs past the end at byte {self.pos}")
        chunk = self.raw[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def string(self) -> str:
        try:
            return str(self.take(self.long()), "utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"string is not UTF-8 at byte {self.pos}") from exc

    def block_count(self) -> int:
        count = self.long()
        if count < 0:  # a negative count is followed by the block's size in bytes
            self.long()
            count = -count
        return count

    def strings(self) -> tuple[str, ...]:
        values: list[str] = []
        while count := self.block_count():
            values.extend(self.string() for _ in range(count))
        return tuple(values)

    def longs(self) -> NDArray[np.int64]:
        blocks: list[NDArray[np.int64]] = []
        while count := self.block_count():
            if count > len(self.buf) - self.pos:
                raise DecodeError(f"array of {count} longs cannot fit in the message")
            out = np.empty(count, dtype=np.int64)
            end = decode_varints(self.buf, self.pos, out, 0, count)
            if end < 0:
                raise DecodeError(f"truncated long array at byte {self.pos}")
            self.pos = end
            blocks.append(out)
        return _joined(blocks, np.int64)

    def doubles(self) -> NDArray[np.float64]:
        blocks: list[NDArray[np.float64]] = []
        while count := self.block_count():
            blocks.append(np.frombuffer(self.take(8 * count), dtype="<f8").astype(np.float64))
        return _joined(blocks, np.float64)

    def union_branch(self, branches: int) -> int:
        branch = self.long()
        if not 0 <= branch < branches:
            raise DecodeError(f"union branch {branch} out of range at byte {self.pos}")
        return branch


def decode_trade_batch_body(body: memoryview) -> TradeBatch:
    """Read a TradeBatch body written with the current schema; raise DecodeError if malformed."""
    r = _Reader(body)
    source = r.string()
    instruments = r.strings()
    index = r.longs()
    ts_event = r.longs()
    ts_recv = r.longs()
    price = r.doubles()
    size = r.doubles()
    side = r.longs() if r.union_branch(2) else None
    trade_id = r.strings() if r.union_branch(2) else None
    watermark = r.long()
    provider = r.string() if r.union_branch(2) else None
    if r.pos != len(r.buf):
        raise DecodeError(f"{len(r.buf) - r.pos} unexpected bytes after the TradeBatch")
    return _checked_batch(
        source,
        instruments,
        index,
        ts_event,
        ts_recv,
        price,
        size,
        side,
        trade_id,
        watermark,
        provider,
    )


def _checked_batch(
    source: str,
    instruments: tuple[str, ...],
    index: NDArray[np.int64],
    ts_event: NDArray[np.int64],
    ts_recv: NDArray[np.int64],
    price: NDArray[np.float64],
    size: NDArray[np.float64],
    side: NDArray[np.int64] | None,
    trade_id: tuple[str, ...] | None,
    watermark_us: int,
    provider: str | None,
) -> TradeBatch:
    n = len(price)
    lengths = {len(index), len(ts_event), len(ts_recv), len(size)}
    lengths |= {len(side)} if side is not None else set()
    lengths |= {len(trade_id)} if trade_id is not None else set()
    if lengths != {n}:
        raise DecodeError(f"TradeBatch columns have different lengths: {sorted(lengths | {n})}")
    if n and (index.min() < 0 or index.max() >= len(instruments)):
        raise DecodeError(f"instrument_index outside the {len(instruments)} instruments")
    if side is not None and n and (side.min() < -1 or side.max() > 1):
        raise DecodeError("side values must be -1, 0 or 1")
    return TradeBatch(
        source=source,
        instruments=instruments,
        instrument_index=index.astype(np.int32),
        ts_event_us=ts_event,
        ts_recv_us=ts_recv,
        price=price,
        size=size,
        side=side.astype(np.int8) if side is not None else None,
        trade_id=trade_id,
        watermark_us=watermark_us,
        provider=provider,
    )


def _without_logical_types(schema: Any) -> Any:
    """Strip logicalType so that fastavro returns timestamps as integer micros, not datetimes."""
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    return schema


class Codec:
    """Encodes and decodes our records with the ids of one schema registry."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._ids = {
            name: registry.id_for(name)
            for name in (
                TRADE_BATCH,
                DEAD_LETTER,
                BAR,
                BAR_BATCH,
                PROVIDER_BAR_BATCH,
                FUNDAMENTAL_STATEMENT,
                FEED_EVENT,
                QUOTE_BATCH,
                GAP,
                INSTRUMENT_STATUS,
                LISTING,
                PM_PRICE_BATCH,
                MATCH,
                ARBITRAGE,
            )
        }
        self._plain_schemas: dict[int | str, Any] = {}

    def _resolve(self, name: str, data: bytes) -> tuple[int, memoryview]:
        schema_id, body = unframe(data)
        if schema_id != self._ids[name]:
            found = self.registry.schema_for(schema_id).name
            if found != name:
                raise DecodeError(f"expected a {name} message, got schema id {schema_id} ({found})")
        return schema_id, body

    def _plain(self, key: int | str) -> Any:
        """Return a schema (by id, or current by name) parsed without logical types, cached."""
        import schemas

        if key not in self._plain_schemas:
            parsed = (
                schemas.load(key) if isinstance(key, str) else self.registry.schema_for(key).parsed
            )
            self._plain_schemas[key] = fastavro.parse_schema(_without_logical_types(parsed))
        return self._plain_schemas[key]

    def _fastavro_read(self, name: str, schema_id: int, body: memoryview) -> dict[str, Any]:
        stream = io.BytesIO(body)
        try:
            record = cast(
                dict[str, Any],
                fastavro.schemaless_reader(stream, self._plain(schema_id), self._plain(name)),
            )
        except (EOFError, ValueError, IndexError, UnicodeDecodeError, StopIteration) as exc:
            raise DecodeError(f"malformed {name} body: {exc!r}") from exc
        except SchemaResolutionError as exc:  # e.g. an enum symbol our version does not know
            raise DecodeError(f"cannot read this {name} version: {exc}") from exc
        if stream.tell() != len(body):
            raise DecodeError(f"{len(body) - stream.tell()} unexpected bytes after the {name}")
        return record

    def _fastavro_write(self, name: str, record: dict[str, Any]) -> bytes:
        import schemas

        out = io.BytesIO()
        fastavro.schemaless_writer(out, schemas.load(name), record)
        return frame(self._ids[name], out.getvalue())

    def schema_id(self, name: str) -> int:
        """The id messages of our record `name` are written with."""
        return self._ids[name]

    def encode_trade_batch(self, batch: TradeBatch) -> bytes:
        return frame(self._ids[TRADE_BATCH], encode_trade_batch_body(batch))

    def decode_trade_batch(self, data: bytes) -> TradeBatch:
        """Decode a framed TradeBatch; raise DecodeError for anything we cannot read."""
        schema_id, body = self._resolve(TRADE_BATCH, data)
        if schema_id == self._ids[TRADE_BATCH]:
            return decode_trade_batch_body(body)
        rec = self._fastavro_read(TRADE_BATCH, schema_id, body)
        return _checked_batch(
            rec["source"],
            tuple(rec["instruments"]),
            np.asarray(rec["instrument_index"], dtype=np.int64),
            np.asarray(rec["ts_event"], dtype=np.int64),
            np.asarray(rec["ts_recv"], dtype=np.int64),
            np.asarray(rec["price"], dtype=np.float64),
            np.asarray(rec["size"], dtype=np.float64),
            None if rec["side"] is None else np.asarray(rec["side"], dtype=np.int64),
            None if rec["trade_id"] is None else tuple(rec["trade_id"]),
            rec["watermark"],
            rec.get("provider"),
        )

    def encode_bar_batch(self, batch: BarBatch) -> bytes:
        return frame(self._ids[BAR_BATCH], encode_bar_batch_body(batch))

    def decode_bar_batch(self, data: bytes) -> BarBatch:
        """Decode a framed BarBatch; raise DecodeError for anything we cannot read."""
        schema_id, body = self._resolve(BAR_BATCH, data)
        if schema_id != self._ids[BAR_BATCH]:
            raise DecodeError(f"BarBatch schema id {schema_id} is not the current one")
        return decode_bar_batch_body(body)

    def encode_dead_letter(self, letter: DeadLetter) -> bytes:
        return self._fastavro_write(
            DEAD_LETTER,
            {
                "component": letter.component,
                "reason": letter.reason,
                "detail": letter.detail,
                "source": letter.source,
                "source_partition": letter.source_partition,
                "source_offset": letter.source_offset,
                "line_number": letter.line_number,
                "key": letter.key,
                "payload": letter.payload,
                "ts_event": letter.ts_event_us,
                "ts_recv": letter.ts_recv_us,
            },
        )

    def decode_dead_letter(self, data: bytes) -> DeadLetter:
        schema_id, body = self._resolve(DEAD_LETTER, data)
        rec = self._fastavro_read(DEAD_LETTER, schema_id, body)
        return DeadLetter(
            component=rec["component"],
            reason=rec["reason"],
            detail=rec["detail"],
            source=rec["source"],
            payload=rec["payload"],
            ts_event_us=rec["ts_event"],
            ts_recv_us=rec["ts_recv"],
            source_partition=rec["source_partition"],
            source_offset=rec["source_offset"],
            line_number=rec["line_number"],
            key=rec["key"],
        )

    def encode_bar(self, bar: Bar) -> bytes:
        return self._fastavro_write(BAR, _bar_record(bar))

    def decode_bar(self, data: bytes) -> Bar:
        schema_id, body = self._resolve(BAR, data)
        rec = self._fastavro_read(BAR, schema_id, body)
        return Bar(**{field.attribute: rec[field.name] for field in BAR_FIELDS})

    def encode_provider_bars(self, batch: ProviderBarBatch) -> bytes:
        ts_event = batch.ts_event_us
        if ts_event is None:
            ts_event = batch.ts_us + parse_interval(batch.interval)
        columns = ("open", "high", "low", "close", "volume", "vwap")
        return self._fastavro_write(
            PROVIDER_BAR_BATCH,
            {
                "source": batch.source,
                "provider": batch.provider,
                "interval": batch.interval,
                "instruments": list(batch.instruments),
                "instrument_index": batch.instrument_index.tolist(),
                "ts": batch.ts_us.tolist(),
                **{c: getattr(batch, c).tolist() for c in columns},
                "trade_count": batch.trade_count.tolist(),
                "revision": batch.revision.tolist(),
                "ts_event": ts_event.tolist(),
                "ts_recv": batch.ts_recv_us,
            },
        )

    def decode_provider_bars(self, data: bytes) -> ProviderBarBatch:
        schema_id, body = self._resolve(PROVIDER_BAR_BATCH, data)
        rec = self._fastavro_read(PROVIDER_BAR_BATCH, schema_id, body)

        def doubles(name: str) -> NDArray[np.float64]:
            return np.asarray(rec[name], dtype=np.float64)

        return ProviderBarBatch(
            source=rec["source"],
            provider=rec["provider"],
            interval=rec["interval"],
            instruments=tuple(rec["instruments"]),
            instrument_index=np.asarray(rec["instrument_index"], dtype=np.int32),
            ts_us=np.asarray(rec["ts"], dtype=np.int64),
            open=doubles("open"),
            high=doubles("high"),
            low=doubles("low"),
            close=doubles("close"),
            volume=doubles("volume"),
            vwap=doubles("vwap"),
            trade_count=np.asarray(rec["trade_count"], dtype=np.int64),
            revision=np.asarray(rec["revision"], dtype=np.int32),
            ts_recv_us=rec["ts_recv"],
            ts_event_us=np.asarray(rec["ts_event"], dtype=np.int64),
        )

    def encode_fundamental(self, statement: FundamentalStatement) -> bytes:
        fiscal_days = (date.fromisoformat(statement.fiscal_date) - EPOCH_DATE).days
        return self._fastavro_write(
            FUNDAMENTAL_STATEMENT,
            {
                "symbol": statement.symbol,
                "statement": statement.statement,
                "period": statement.period,
                "fiscal_date": fiscal_days,
                "provider": statement.provider,
                "body": statement.body.decode(),
                "ts_event": statement.ts_event_us,
                "ts_recv": statement.ts_recv_us,
            },
        )

    def decode_fundamental(self, data: bytes) -> FundamentalStatement:
        """Decode a framed FundamentalStatement; raise DecodeError for anything we cannot read
        (a fiscal date outside years 1 to 9999 too)."""
        schema_id, body = self._resolve(FUNDAMENTAL_STATEMENT, data)
        rec = self._fastavro_read(FUNDAMENTAL_STATEMENT, schema_id, body)
        try:
            fiscal_date = EPOCH_DATE + timedelta(days=rec["fiscal_date"])
        except OverflowError:
            raise DecodeError(f"fiscal_date {rec['fiscal_date']} days is not a date") from None
        return FundamentalStatement(
            symbol=rec["symbol"],
            statement=rec["statement"],
            period=rec["period"],
            fiscal_date=fiscal_date.isoformat(),
            provider=rec["provider"],
            body=rec["body"].encode(),
            ts_event_us=rec["ts_event"],
            ts_recv_us=rec["ts_recv"],
        )

    def encode_quote_batch(self, batch: QuoteBatch) -> bytes:
        return self._fastavro_write(
            QUOTE_BATCH,
            {
                "source": batch.source,
                "provider": batch.provider,
                "instruments": list(batch.instruments),
                "instrument_index": batch.instrument_index.tolist(),
                "ts_event": batch.ts_event_us.tolist(),
                "ts_recv": batch.ts_recv_us.tolist(),
                "bid_price": batch.bid_price.tolist(),
                "bid_size": batch.bid_size.tolist(),
                "ask_price": batch.ask_price.tolist(),
                "ask_size": batch.ask_size.tolist(),
            },
        )

    def decode_quote_batch(self, data: bytes) -> QuoteBatch:
        schema_id, body = self._resolve(QUOTE_BATCH, data)
        rec = self._fastavro_read(QUOTE_BATCH, schema_id, body)
        return QuoteBatch(
            source=rec["source"],
            instruments=tuple(rec["instruments"]),
            instrument_index=np.asarray(rec["instrument_index"], dtype=np.int32),
            ts_event_us=np.asarray(rec["ts_event"], dtype=np.int64),
            ts_recv_us=np.asarray(rec["ts_recv"], dtype=np.int64),
            bid_price=np.asarray(rec["bid_price"], dtype=np.float64),
            bid_size=np.asarray(rec["bid_size"], dtype=np.float64),
            ask_price=np.asarray(rec["ask_price"], dtype=np.float64),
            ask_size=np.asarray(rec["ask_size"], dtype=np.float64),
            provider=rec["provider"],
        )

    def encode_feed_event(self, event: FeedEvent) -> bytes:
        return self._fastavro_write(
            FEED_EVENT,
            {
                "source": event.source,
                "kind": event.kind,
                "detail": event.detail,
                "blind_since": event.blind_since_us,
                "ts_event": event.ts_event_us,
                "ts_recv": event.ts_recv_us,
            },
        )

    def decode_feed_event(self, data: bytes) -> FeedEvent:
        schema_id, body = self._resolve(FEED_EVENT, data)
        rec = self._fastavro_read(FEED_EVENT, schema_id, body)
        return FeedEvent(
            rec["source"],
            rec["kind"],
            rec["detail"],
            rec["blind_since"],
            rec["ts_event"],
            rec["ts_recv"],
        )

    def encode_gap(self, gap: Gap) -> bytes:
        return self._fastavro_write(
            GAP,
            {
                "instrument": gap.instrument,
                "interval": gap.interval,
                "start": gap.start_us,
                "end": gap.end_us,
                "cause": str(gap.cause),
                "provider": gap.provider,
                "tier": gap.tier,
                "detail": gap.detail,
                "ts_event": gap.detected_at_us,
                "ts_recv": gap.ts_recv_us,
            },
        )

    def decode_gap(self, data: bytes) -> Gap:
        """Decode a framed Gap; raise DecodeError for anything we cannot read."""
        schema_id, body = self._resolve(GAP, data)
        rec = self._fastavro_read(GAP, schema_id, body)
        return Gap(
            instrument=rec["instrument"],
            interval=rec["interval"],
            start_us=rec["start"],
            end_us=rec["end"],
            cause=GapCause(rec["cause"]),
            detail=rec["detail"],
            detected_at_us=rec["ts_event"],
            ts_recv_us=rec["ts_recv"],
            provider=rec["provider"],
            tier=rec["tier"],
        )

    def encode_instrument_status(self, status: InstrumentStatus) -> bytes:
        return self._fastavro_write(
            INSTRUMENT_STATUS,
            {
                "instrument": status.instrument,
                "halted": status.halted,
                "status_code": status.status_code,
                "status": status.status,
                "reason_code": status.reason_code,
                "reason": status.reason,
                "source": status.source,
                "ts_event": status.ts_event_us,
                "ts_recv": status.ts_recv_us,
            },
        )

    def decode_instrument_status(self, data: bytes) -> InstrumentStatus:
        """Decode a framed InstrumentStatus; raise DecodeError for anything we cannot read."""
        schema_id, body = self._resolve(INSTRUMENT_STATUS, data)
        rec = self._fastavro_read(INSTRUMENT_STATUS, schema_id, body)
        return InstrumentStatus(
            instrument=rec["instrument"],
            halted=rec["halted"],
            status_code=rec["status_code"],
            status=rec["status"],
            reason_code=rec["reason_code"],
            reason=rec["reason"],
            source=rec["source"],
            ts_event_us=rec["ts_event"],
            ts_recv_us=rec["ts_recv"],
        )

    def encode_listing(self, listing: Listing) -> bytes:
        return self._fastavro_write(
            LISTING,
            {
                "venue": listing.venue,
                "market_id": listing.market_id,
                "event_id": listing.event_id,
                "title": listing.title,
                "subtitle": listing.subtitle,
                "rules": listing.rules,
                "category": listing.category,
                "close_time": listing.close_time_us,
                "outcomes": list(listing.outcomes),
                "status": str(listing.status),
                "venue_status": listing.venue_status,
                "url": listing.url,
                "ts_event": listing.ts_event_us,
                "ts_recv": listing.ts_recv_us,
            },
        )

    def decode_listing(self, data: bytes) -> Listing:
        """Decode a framed Listing; raise DecodeError for anything we cannot read (an unknown
        status too)."""
        schema_id, body = self._resolve(LISTING, data)
        rec = self._fastavro_read(LISTING, schema_id, body)
        try:
            status = ListingStatus(rec["status"])
        except ValueError:
            raise DecodeError(f"unknown listing status {rec['status']!r}") from None
        return Listing(
            venue=rec["venue"],
            market_id=rec["market_id"],
            event_id=rec["event_id"],
            title=rec["title"],
            subtitle=rec["subtitle"],
            rules=rec["rules"],
            category=rec["category"],
            close_time_us=rec["close_time"],
            outcomes=tuple(rec["outcomes"]),
            status=status,
            venue_status=rec["venue_status"],
            url=rec["url"],
            ts_event_us=rec["ts_event"],
            ts_recv_us=rec["ts_recv"],
        )

    def encode_pm_price_batch(self, batch: PmPriceBatch) -> bytes:
        return self._fastavro_write(
            PM_PRICE_BATCH,
            {
                "venue": batch.venue,
                "markets": list(batch.markets),
                "market_index": batch.market_index.tolist(),
                "outcomes": list(batch.outcomes),
                "outcome_index": batch.outcome_index.tolist(),
                "bid_price": batch.bid_price.tolist(),
                "bid_size": batch.bid_size.tolist(),
                "ask_price": batch.ask_price.tolist(),
                "ask_size": batch.ask_size.tolist(),
                "ts_event": batch.ts_event_us.tolist(),
                "ts_recv": batch.ts_recv_us.tolist(),
            },
        )

    def decode_pm_price_batch(self, data: bytes) -> PmPriceBatch:
        """Decode a framed PmPriceBatch; raise DecodeError for anything we cannot read
        (columns of different lengths, an index outside its dictionary)."""
        schema_id, body = self._resolve(PM_PRICE_BATCH, data)
        rec = self._fastavro_read(PM_PRICE_BATCH, schema_id, body)
        batch = PmPriceBatch(
            venue=rec["venue"],
            markets=tuple(rec["markets"]),
            market_index=np.asarray(rec["market_index"], dtype=np.int32),
            outcomes=tuple(rec["outcomes"]),
            outcome_index=np.asarray(rec["outcome_index"], dtype=np.int32),
            bid_price=np.asarray(rec["bid_price"], dtype=np.float64),
            bid_size=np.asarray(rec["bid_size"], dtype=np.float64),
            ask_price=np.asarray(rec["ask_price"], dtype=np.float64),
            ask_size=np.asarray(rec["ask_size"], dtype=np.float64),
            ts_event_us=np.asarray(rec["ts_event"], dtype=np.int64),
            ts_recv_us=np.asarray(rec["ts_recv"], dtype=np.int64),
        )
        columns = (
            batch.outcome_index, batch.bid_price, batch.bid_size, batch.ask_price,
            batch.ask_size, batch.ts_event_us, batch.ts_recv_us,
        )  # fmt: skip
        lengths = {len(batch.market_index), *(len(c) for c in columns)}
        if len(lengths) > 1:
            raise DecodeError(f"PmPriceBatch columns have different lengths: {sorted(lengths)}")
        for index, names in (
            (batch.market_index, batch.markets),
            (batch.outcome_index, batch.outcomes),
        ):
            if len(index) and (index.min() < 0 or index.max() >= len(names)):
                raise DecodeError(f"a PmPriceBatch index points outside its {len(names)} names")
        return batch

    def encode_match(self, match: Match) -> bytes:
        return self._fastavro_write(
            MATCH,
            {
                "pair": match.key,
                "a_venue": match.a_venue,
                "a_market_id": match.a_market_id,
                "b_venue": match.b_venue,
                "b_market_id": match.b_market_id,
                "score": match.score,
                "rank": match.rank,
                "decision": str(match.decision),
                "decided_by": str(match.decided_by),
                "auto_decision": str(match.auto_decision),
                "inverted": match.inverted,
                "agreed": list(match.agreed),
                "differed": list(match.differed),
                "one_sided": list(match.one_sided),
                "warnings": list(match.warnings),
                "ts_event": match.ts_event_us,
                "ts_recv": match.ts_recv_us,
            },
        )

    def decode_match(self, data: bytes) -> Match:
        """Decode a framed Match; raise DecodeError for anything we cannot read."""
        schema_id, body = self._resolve(MATCH, data)
        rec = self._fastavro_read(MATCH, schema_id, body)
        return Match(
            a_venue=rec["a_venue"],
            a_market_id=rec["a_market_id"],
            b_venue=rec["b_venue"],
            b_market_id=rec["b_market_id"],
            score=rec["score"],
            rank=rec["rank"],
            decision=MatchDecision(rec["decision"]),
            decided_by=MatchDecider(rec["decided_by"]),
            auto_decision=MatchDecision(rec["auto_decision"]),
            inverted=rec["inverted"],
            agreed=tuple(rec["agreed"]),
            differed=tuple(rec["differed"]),
            one_sided=tuple(rec["one_sided"]),
            warnings=tuple(rec["warnings"]),
            ts_event_us=rec["ts_event"],
            ts_recv_us=rec["ts_recv"],
        )

    def encode_arbitrage(self, arb: Arbitrage) -> bytes:
        return self._fastavro_write(
            ARBITRAGE,
            {
                "pair": arb.pair,
                "direction": str(arb.direction),
                "yes_leg": _leg_record(arb.yes_leg),
                "no_leg": _leg_record(arb.no_leg),
                "contracts": arb.contracts,
                "cost": arb.cost,
                "edge": arb.edge,
                "opened_at": arb.opened_at_us,
                "closed_at": arb.closed_at_us,
                "lifetime_s": arb.lifetime_s,
                "ts_event": arb.observed_at_us,
                "ts_recv": arb.ts_recv_us,
            },
        )

    def decode_arbitrage(self, data: bytes) -> Arbitrage:
        """Decode a framed Arbitrage; raise DecodeError for anything we cannot read."""
        schema_id, body = self._resolve(ARBITRAGE, data)
        rec = self._fastavro_read(ARBITRAGE, schema_id, body)
        return Arbitrage(
            pair=rec["pair"],
            direction=ArbitrageDirection(rec["direction"]),
            yes_leg=ArbitrageLeg(**rec["yes_leg"]),
            no_leg=ArbitrageLeg(**rec["no_leg"]),
            contracts=rec["contracts"],
            cost=rec["cost"],
            edge=rec["edge"],
            opened_at_us=rec["opened_at"],
            closed_at_us=rec["closed_at"],
            observed_at_us=rec["ts_event"],
            ts_recv_us=rec["ts_recv"],
        )


def _leg_record(leg: ArbitrageLeg) -> dict[str, Any]:
    return {
        "venue": leg.venue,
        "market_id": leg.market_id,
        "outcome": leg.outcome,
        "price": leg.price,
        "size": leg.size,
        "fee": leg.fee,
    }


def _bar_record(bar: Bar) -> dict[str, Any]:
    return {field.name: getattr(bar, field.attribute) for field in BAR_FIELDS}
