"""The Avro codec: TradeBatch bytes equal fastavro's, Confluent framing, DecodeError on bad data."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest

import schemas
from shared.codec import (
    Codec,
    decode_trade_batch_body,
    encode_trade_batch_body,
    frame,
    unframe,
)
from shared.errors import DecodeError
from shared.models import (
    Bar,
    DeadLetter,
    Gap,
    GapCause,
    InstrumentStatus,
    Listing,
    ListingStatus,
    PmPrice,
    PmPriceBatch,
    TradeBatch,
)
from shared.schema_ids import CommittedSchemas, RegisteredSchema

ROOT = Path(__file__).resolve().parents[2]
IDS: dict[str, list[dict[str, Any]]] = json.loads((ROOT / "schemas" / "ids.json").read_text())
INT64_MIN = int(np.iinfo(np.int64).min)
INT64_MAX = int(np.iinfo(np.int64).max)


# --- helpers ------------------------------------------------------------------------------------


ARCHIVE = Path(schemas.__file__).parent / "avro" / "archive" / "trade_batch.v1.avsc"


def _fastavro_body(record: dict[str, Any], name: str = "trade_batch") -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schemas.load(name), record)
    return out.getvalue()


def _plain(schema: Any) -> Any:
    """Drop logicalType so that fastavro reads timestamps as integer micros."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    return schema


def _fastavro_read(body: bytes, name: str = "trade_batch") -> dict[str, Any]:
    schema = fastavro.parse_schema(_plain(json.loads(schemas.source(name))))
    record: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(body), schema, None)
    return record


def _primitive(schema: str, value: Any) -> bytes:
    """Encode one Avro primitive with fastavro, independent of the codec under test."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, value)
    return out.getvalue()


def _record(batch: TradeBatch) -> dict[str, Any]:
    return {
        "source": batch.source,
        "instruments": list(batch.instruments),
        "instrument_index": batch.instrument_index.tolist(),
        "ts_event": batch.ts_event_us.tolist(),
        "ts_recv": batch.ts_recv_us.tolist(),
        "price": batch.price.tolist(),
        "size": batch.size.tolist(),
        "side": None if batch.side is None else batch.side.tolist(),
        "trade_id": None if batch.trade_id is None else list(batch.trade_id),
        "watermark": batch.watermark_us,
        "provider": batch.provider,
    }


def _batch(
    instruments: tuple[str, ...] = ("AAPL", "MSFT"),
    index: list[int] | None = None,
    ts_event: list[int] | None = None,
    side: list[int] | None = None,
    trade_id: tuple[str, ...] | None = None,
    source: str = "test",
) -> TradeBatch:
    index = [0, 1, 0] if index is None else index
    n = len(index)
    ts = (
        list(range(1_767_623_400_000_000, 1_767_623_400_000_000 + n))
        if ts_event is None
        else ts_event
    )
    return TradeBatch(
        source=source,
        instruments=instruments,
        instrument_index=np.array(index, dtype=np.int32),
        ts_event_us=np.array(ts, dtype=np.int64),
        ts_recv_us=np.array(ts, dtype=np.int64) + 7,
        price=np.linspace(100.0, 101.0, n),
        size=np.arange(1, n + 1, dtype=np.float64),
        side=None if side is None else np.array(side, dtype=np.int8),
        trade_id=trade_id,
    )


def _random_batch(rng: np.random.Generator, n: int, with_side: bool, with_id: bool) -> TradeBatch:
    """Random columns; batches with ids also name a provider, as a failover feed's do."""
    k = int(rng.integers(1, 50))
    instruments = tuple(f"SYM{i}.{int(rng.integers(0, 1_000_000))}" for i in range(k))
    ts_event = rng.integers(0, 2_000_000_000_000_000, n, dtype=np.int64)
    return TradeBatch(
        source="simulator",
        instruments=instruments,
        instrument_index=rng.integers(0, k, n).astype(np.int32),
        ts_event_us=ts_event,
        ts_recv_us=ts_event + rng.integers(0, 5_000_000, n),
        price=np.exp(rng.uniform(-10, 12, n)),
        size=np.round(rng.lognormal(3.0, 2.0, n), 4),
        side=rng.integers(-1, 2, n).astype(np.int8) if with_side else None,
        trade_id=tuple(f"t{int(v)}" if v % 3 else "" for v in rng.integers(0, 10**12, n))
        if with_id
        else None,
        provider="finnhub" if with_id else None,
    )


def _assert_batches_equal(actual: TradeBatch, expected: TradeBatch) -> None:
    assert actual.source == expected.source
    assert actual.instruments == expected.instruments
    assert actual.instrument_index.dtype == np.int32
    np.testing.assert_array_equal(actual.instrument_index, expected.instrument_index)
    np.testing.assert_array_equal(actual.ts_event_us, expected.ts_event_us)
    np.testing.assert_array_equal(actual.ts_recv_us, expected.ts_recv_us)
    np.testing.assert_array_equal(actual.price, expected.price)
    np.testing.assert_array_equal(actual.size, expected.size)
    if expected.side is None:
        assert actual.side is None
    else:
        assert actual.side is not None
        assert actual.side.dtype == np.int8
        np.testing.assert_array_equal(actual.side, expected.side)
    assert actual.trade_id == expected.trade_id
    assert actual.provider == expected.provider


def _dead_letter(**overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "component": "connector.replay",
        "reason": "bad_price",
        "detail": "price '-3' must be a finite number > 0",
        "source": "/data/trades.csv",
        "payload": b"2026-01-05T14:30:00Z,BRK.B,-3,1\x00\xff",
        "ts_event_us": 1_767_623_400_000_300,
        "ts_recv_us": 1_767_623_401_000_000,
    }
    fields.update(overrides)
    return DeadLetter(**fields)


def _bar() -> Bar:
    return Bar(
        instrument="ES=F",
        interval="1m",
        ts_us=1_767_623_400_000_000,
        revision=2,
        open=5012.25,
        high=5013.0,
        low=5011.5,
        close=5012.75,
        volume=42.0,
        vwap=5012.4,
        trade_count=17,
        buy_volume=30.0,
        sell_volume=12.0,
        source="replay",
        ts_event_us=1_767_623_459_999_999,
        ts_recv_us=1_767_623_460_000_100,
        seq=41,
    )


def _gap(**overrides: Any) -> Gap:
    fields: dict[str, Any] = {
        "instrument": "AAPL",
        "interval": "1m",
        "start_us": 1_767_625_200_000_000,  # 2026-01-05T15:00:00Z
        "end_us": 1_767_625_800_000_000,  # ten minutes later
        "cause": GapCause.DISCONNECT,
        "detail": "alpaca closed the stream (1006)",
        "detected_at_us": 1_767_625_860_250_000,
        "ts_recv_us": 1_767_625_860_251_400,
    }
    fields.update(overrides)
    return Gap(**fields)


# --- encode_trade_batch_body: byte-for-byte what fastavro writes ------------------------------


@pytest.mark.parametrize("with_side", [False, True])
@pytest.mark.parametrize("with_id", [False, True])
@pytest.mark.parametrize("n", [1, 2, 17, 1000])
def test_encode_trade_batch_body_random_batch_equals_fastavro(
    n: int, with_side: bool, with_id: bool
) -> None:
    # Arrange
    rng = np.random.default_rng(20260105 + n + 2 * with_side + with_id)
    batch = _random_batch(rng, n, with_side, with_id)

    # Act
    body = encode_trade_batch_body(batch)

    # Assert
    assert body == _fastavro_body(_record(batch))


def test_encode_trade_batch_body_empty_batch_equals_fastavro() -> None:
    # Arrange
    batch = _batch(instruments=(), index=[])

    # Act
    body = encode_trade_batch_body(batch)

    # Assert
    assert body == _fastavro_body(_record(batch))


def test_encode_trade_batch_body_empty_side_and_id_columns_equal_fastavro() -> None:
    # Arrange
    batch = _batch(instruments=(), index=[], side=[], trade_id=())

    # Act
    body = encode_trade_batch_body(batch)

    # Assert
    assert body == _fastavro_body(_record(batch))


def test_encode_trade_batch_body_unicode_symbols_equals_fastavro() -> None:
    # Arrange
    batch = _batch(
        instruments=("日経225", "€STR", "🚀MOON", "e\u0301clair"),
        index=[0, 1, 2, 3, 2],
        trade_id=("\u2160", "", "идентификатор", "🚀", "x"),
        source="sourcé",
    )

    # Act
    body = encode_trade_batch_body(batch)

    # Assert
    assert body == _fastavro_body(_record(batch))


def test_encode_trade_batch_body_extreme_longs_equals_fastavro() -> None:
    # Arrange
    extremes = [
        INT64_MIN,
        INT64_MIN + 1,
        -(2**32),
        -1,
        0,
        1,
        63,
        64,
        -64,
        -65,
        2**31,
        2**62,
        INT64_MAX - 1,
        INT64_MAX,
    ]
    batch = _batch(
        instruments=("A",),
        index=[0] * len(extremes),
        ts_event=extremes,
        side=[-1, 0, 1] * 4 + [1, -1],
    )
    batch = TradeBatch(
        source=batch.source,
        instruments=batch.instruments,
        instrument_index=batch.instrument_index,
        ts_event_us=batch.ts_event_us,
        ts_recv_us=batch.ts_event_us[::-1].copy(),
        price=batch.price,
        size=batch.size,
        side=batch.side,
    )

    # Act
    body = encode_trade_batch_body(batch)

    # Assert
    assert body == _fastavro_body(_record(batch))


def test_encode_trade_batch_body_special_doubles_equals_fastavro() -> None:
    # Arrange
    values = [5e-324, 1e-300, 0.1, 1.0 / 3.0, 1e300, np.finfo(np.float64).max]
    batch = _batch(instruments=("A",), index=[0] * len(values))
    batch = TradeBatch(
        source="s",
        instruments=("A",),
        instrument_index=batch.instrument_index,
        ts_event_us=batch.ts_event_us,
        ts_recv_us=batch.ts_recv_us,
        price=np.array(values),
        size=np.array(values[::-1]),
    )

    # Act
    body = encode_trade_batch_body(batch)

    # Assert
    assert body == _fastavro_body(_record(batch))


# --- decode_trade_batch_body: reads what fastavro writes --------------------------------------


@pytest.mark.parametrize("with_side", [False, True])
@pytest.mark.parametrize("with_id", [False, True])
def test_decode_trade_batch_body_fastavro_written_equals_columns(
    with_side: bool, with_id: bool
) -> None:
    # Arrange
    rng = np.random.default_rng(7 + 2 * with_side + with_id)
    expected = _random_batch(rng, 500, with_side, with_id)
    body = _fastavro_body(_record(expected))

    # Act
    decoded = decode_trade_batch_body(memoryview(body))

    # Assert
    _assert_batches_equal(decoded, expected)


def test_decode_trade_batch_body_extreme_longs_equals_columns() -> None:
    # Arrange
    extremes = [INT64_MIN, -1, 0, 1, INT64_MAX]
    expected = _batch(instruments=("A",), index=[0] * 5, ts_event=extremes, side=[-1, 0, 1, 1, -1])
    body = _fastavro_body(_record(expected))

    # Act
    decoded = decode_trade_batch_body(memoryview(body))

    # Assert
    _assert_batches_equal(decoded, expected)


def test_decode_trade_batch_body_empty_batch_equals_columns() -> None:
    # Arrange
    expected = _batch(instruments=(), index=[])
    body = _fastavro_body(_record(expected))

    # Act
    decoded = decode_trade_batch_body(memoryview(body))

    # Assert
    assert len(decoded) == 0
    _assert_batches_equal(decoded, expected)


def _array(items_schema: str, blocks: list[list[Any]]) -> bytes:
    """Encode an Avro array as the given blocks; every block after the first uses a negative count
    followed by its size in bytes, as the spec allows."""
    out = b""
    for i, block in enumerate(blocks):
        items = b"".join(_primitive(items_schema, v) for v in block)
        if i == 0:
            out += _primitive("long", len(block)) + items
        else:
            out += _primitive("long", -len(block)) + _primitive("long", len(items)) + items
    return out + _primitive("long", 0)


def test_decode_trade_batch_body_multiple_array_blocks_equals_columns() -> None:
    # Arrange
    body = b"".join(
        [
            _primitive("string", "multi"),
            _array("string", [["AAPL"], ["MSFT", "BRK.B"]]),
            _array("int", [[0, 1], [2, 0, 1]]),
            _array("long", [[10, INT64_MIN], [INT64_MAX, 13, 14]]),
            _array("long", [[20, 21, 22], [23, 24]]),
            _array("double", [[1.5], [2.5, 3.5, 4.5, 5.5]]),
            _array("double", [[1.0, 2.0, 3.0, 4.0], [5.0]]),
            _primitive("long", 1) + _array("int", [[1, -1, 0], [1], [-1]]),
            _primitive("long", 1) + _array("string", [["a", ""], ["c", "d", "e"]]),
            _primitive("long", 1_767_623_400_000_000),
            _primitive("long", 1) + _primitive("string", "finnhub"),
        ]
    )
    as_fastavro_reads_it = _fastavro_read(body)
    expected = TradeBatch(
        source="multi",
        instruments=("AAPL", "MSFT", "BRK.B"),
        instrument_index=np.array([0, 1, 2, 0, 1], dtype=np.int32),
        ts_event_us=np.array([10, INT64_MIN, INT64_MAX, 13, 14], dtype=np.int64),
        ts_recv_us=np.array([20, 21, 22, 23, 24], dtype=np.int64),
        price=np.array([1.5, 2.5, 3.5, 4.5, 5.5]),
        size=np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        side=np.array([1, -1, 0, 1, -1], dtype=np.int8),
        trade_id=("a", "", "c", "d", "e"),
        watermark_us=1_767_623_400_000_000,
        provider="finnhub",
    )
    assert as_fastavro_reads_it == _record(expected)  # the hand-made body is valid Avro

    # Act
    decoded = decode_trade_batch_body(memoryview(body))

    # Assert
    _assert_batches_equal(decoded, expected)


# --- Codec: round trips and framing -----------------------------------------------------------


@pytest.mark.parametrize("with_side", [False, True])
@pytest.mark.parametrize("with_id", [False, True])
def test_codec_trade_batch_round_trip_equals_original(
    codec: Codec, with_side: bool, with_id: bool
) -> None:
    # Arrange
    batch = _random_batch(np.random.default_rng(99), 300, with_side, with_id)

    # Act
    decoded = codec.decode_trade_batch(codec.encode_trade_batch(batch))

    # Assert
    _assert_batches_equal(decoded, batch)


def test_codec_trade_batch_round_trip_empty_batch_equals_original(codec: Codec) -> None:
    # Arrange
    batch = _batch(instruments=(), index=[])

    # Act
    decoded = codec.decode_trade_batch(codec.encode_trade_batch(batch))

    # Assert
    _assert_batches_equal(decoded, batch)


@pytest.mark.parametrize(
    "letter",
    [
        _dead_letter(),
        _dead_letter(
            source_partition=2, source_offset=2**40, line_number=7, key=b"AAPL", payload=b""
        ),
        _dead_letter(ts_event_us=INT64_MIN, ts_recv_us=INT64_MAX, detail="unicodé ✓"),
    ],
    ids=["optionals-null", "optionals-set", "extremes"],
)
def test_codec_dead_letter_round_trip_equals_original(codec: Codec, letter: DeadLetter) -> None:
    # Arrange
    data = codec.encode_dead_letter(letter)

    # Act
    decoded = codec.decode_dead_letter(data)

    # Assert
    assert decoded == letter


def test_codec_bar_round_trip_equals_original(codec: Codec) -> None:
    # Arrange
    bar = _bar()

    # Act
    decoded = codec.decode_bar(codec.encode_bar(bar))

    # Assert
    assert decoded == bar


@pytest.mark.parametrize(
    "gap",
    [
        _gap(),
        _gap(cause=GapCause.PROVIDER_ERROR, provider="alpaca", tier="T0", detail="halted: LUDP"),
        _gap(cause=GapCause.SWEEP, interval="1d", tier="T2", detail=""),
        *(_gap(cause=cause) for cause in GapCause),
    ],
    ids=["optionals-null", "optionals-set", "sweep-1d", *(str(c) for c in GapCause)],
)
def test_codec_gap_round_trip_equals_original(codec: Codec, gap: Gap) -> None:
    # Arrange
    data = codec.encode_gap(gap)

    # Act
    decoded = codec.decode_gap(data)

    # Assert
    assert decoded == gap
    assert type(decoded.cause) is GapCause


def test_codec_instrument_status_round_trip_equals_original(codec: Codec) -> None:
    status = InstrumentStatus(
        instrument="TSLA",
        halted=True,
        status_code="H",
        status="Trading Halt",
        reason_code="LUDP",
        reason="Volatility Trading Pause",
        source="alpaca",
        ts_event_us=1_741_790_470_123_456,
        ts_recv_us=1_741_790_470_125_000,
    )

    assert codec.decode_instrument_status(codec.encode_instrument_status(status)) == status


def _listing(**overrides: Any) -> Listing:
    fields: dict[str, Any] = {
        "venue": "kalshi",
        "market_id": "KXHIGHNY-25DEC01-T45",
        "event_id": "KXHIGHNY-25DEC01",
        "title": "Will the high temp in NYC be >45° on Dec 1, 2025?",
        "subtitle": "45° or above",
        "rules": "If the highest temperature recorded in Central Park ... resolves to Yes.",
        "category": "Climate and Weather",
        "close_time_us": 1_764_626_340_000_000,
        "outcomes": ("Yes", "No"),
        "status": ListingStatus.OPEN,
        "venue_status": "active",
        "url": "https://kalshi.com/markets/kxhighny",
        "ts_event_us": 1_764_540_000_123_456,
        "ts_recv_us": 1_764_540_000_125_000,
    }
    return Listing(**(fields | overrides))


@pytest.mark.parametrize(
    "listing",
    [
        _listing(),
        _listing(event_id=None, close_time_us=None, url=None, status=ListingStatus.SETTLED),
        _listing(
            venue="polymarket",
            market_id="516710",
            title="Lakers vs. Celtics",
            outcomes=("Lakers", "Celtics"),
            subtitle="",
            status=ListingStatus.UPCOMING,
        ),
    ],
    ids=["kalshi-open", "optionals-null", "polymarket-named-outcomes"],
)
def test_codec_listing_round_trip_equals_original(codec: Codec, listing: Listing) -> None:
    # Act
    decoded = codec.decode_listing(codec.encode_listing(listing))

    # Assert
    assert decoded == listing
    assert type(decoded.status) is ListingStatus


def test_codec_decode_listing_unknown_status_raises_decode_error(codec: Codec) -> None:
    # Arrange: a status only a later version would write
    record = {
        "venue": "kalshi", "market_id": "X", "event_id": None, "title": "t", "subtitle": "",
        "rules": "", "category": "", "close_time": None, "outcomes": ["Yes", "No"],
        "status": "halted", "venue_status": "halted", "url": None,
        "ts_event": 1_764_540_000_000_000, "ts_recv": 1_764_540_000_000_000,
    }  # fmt: skip
    data = frame(IDS["listing"][-1]["id"], _fastavro_body(record, "listing"))

    # Act / Assert
    with pytest.raises(DecodeError, match="halted"):
        codec.decode_listing(data)


def _pm_prices() -> PmPriceBatch:
    ts = 1_764_540_000_125_000
    return PmPriceBatch.from_rows(
        "polymarket",
        [
            PmPrice("516710", "Lakers", 0.41, 120.0, 0.43, 80.5, ts - 2_000, ts),
            PmPrice("516710", "Celtics", 0.57, 95.0, 0.59, 60.0, ts - 2_000, ts),
            PmPrice("516711", "Yes", float("nan"), 0.0, 0.07, 1_500.0, ts - 1_000, ts),
            PmPrice("516711", "No", 0.93, 1_500.0, float("nan"), 0.0, ts - 1_000, ts),
        ],
    )


def test_codec_pm_price_batch_round_trip_keeps_rows_and_nan(codec: Codec) -> None:
    # Arrange
    batch = _pm_prices()

    # Act
    decoded = codec.decode_pm_price_batch(codec.encode_pm_price_batch(batch))

    # Assert: NaN (no bid, no ask) survives; compare as strings so that NaN equals NaN
    assert decoded.markets == ("516710", "516711") and decoded.outcomes == (
        "Lakers",
        "Celtics",
        "Yes",
        "No",
    )
    assert [repr(r) for r in decoded.rows()] == [repr(r) for r in batch.rows()]
    assert decoded.keys() == ["polymarket:516710"] * 2 + ["polymarket:516711"] * 2


def test_codec_decode_pm_price_batch_index_outside_dictionary_raises_decode_error(
    codec: Codec,
) -> None:
    # Arrange
    batch = _pm_prices()
    broken = PmPriceBatch(
        batch.venue, batch.markets, batch.market_index + 5, batch.outcomes, batch.outcome_index,
        batch.bid_price, batch.bid_size, batch.ask_price, batch.ask_size, batch.ts_event_us,
        batch.ts_recv_us,
    )  # fmt: skip

    # Act / Assert
    with pytest.raises(DecodeError, match="outside"):
        codec.decode_pm_price_batch(codec.encode_pm_price_batch(broken))


def test_gap_cause_members_equal_the_schema_enum_symbols() -> None:
    # Arrange
    fields = {f["name"]: f["type"] for f in json.loads(schemas.source("gap"))["fields"]}

    # Act
    symbols = fields["cause"]["symbols"]

    # Assert
    assert [str(cause) for cause in GapCause] == symbols


class _WithLaterGap:
    """The committed schemas plus a later gap version, id 999, that knows one more cause."""

    LATER_ID = 999

    def __init__(self) -> None:
        self.committed = CommittedSchemas()
        later = json.loads(schemas.source("gap"))
        for field in later["fields"]:
            if field["name"] == "cause":
                field["type"]["symbols"].append("halt")
        self.later_text = json.dumps(later)

    def id_for(self, name: str) -> int:
        return self.committed.id_for(name)

    def schema_for(self, schema_id: int) -> RegisteredSchema:
        if schema_id == self.LATER_ID:
            return RegisteredSchema(schema_id, "gap", 2, self.later_text)
        return self.committed.schema_for(schema_id)


def test_codec_decode_gap_of_a_later_version_with_an_unknown_cause_raises_decode_error() -> None:
    # Arrange
    registry = _WithLaterGap()
    record = {
        "instrument": "AAPL",
        "interval": "1m",
        "start": 1_767_625_200_000_000,
        "end": 1_767_625_800_000_000,
        "cause": "halt",
        "provider": None,
        "tier": "T0",
        "detail": "LULD pause",
        "ts_event": 1_767_625_860_250_000,
        "ts_recv": 1_767_625_860_251_400,
    }
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(json.loads(registry.later_text)), record)

    # Act / Assert
    with pytest.raises(DecodeError, match="halt"):
        Codec(registry).decode_gap(frame(registry.LATER_ID, out.getvalue()))


@pytest.mark.parametrize(
    "name", ["trade_batch", "dead_letter", "bar", "gap", "listing", "pm_price_batch"]
)
def test_codec_encode_any_record_frames_with_magic_zero_and_ids_json_id(
    codec: Codec, name: str
) -> None:
    # Arrange
    encoders = {
        "trade_batch": lambda: codec.encode_trade_batch(_batch()),
        "dead_letter": lambda: codec.encode_dead_letter(_dead_letter()),
        "bar": lambda: codec.encode_bar(_bar()),
        "gap": lambda: codec.encode_gap(_gap()),
        "listing": lambda: codec.encode_listing(_listing()),
        "pm_price_batch": lambda: codec.encode_pm_price_batch(_pm_prices()),
    }

    # Act
    data = encoders[name]()

    # Assert
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == IDS[name][-1]["id"]


def test_codec_encode_trade_batch_body_reads_back_with_fastavro(codec: Codec) -> None:
    # Arrange
    batch = _batch(side=[1, -1, 0], trade_id=("a", "", "c"))

    # Act
    record = _fastavro_read(codec.encode_trade_batch(batch)[5:], "trade_batch")

    # Assert
    assert record == _record(batch)


def test_codec_encode_dead_letter_body_reads_back_with_fastavro(codec: Codec) -> None:
    # Arrange
    letter = _dead_letter(source_offset=12, key=b"MSFT")

    # Act
    record = _fastavro_read(codec.encode_dead_letter(letter)[5:], "dead_letter")

    # Assert
    assert record == {
        "component": letter.component,
        "reason": letter.reason,
        "detail": letter.detail,
        "source": letter.source,
        "source_partition": None,
        "source_offset": 12,
        "line_number": None,
        "key": b"MSFT",
        "payload": letter.payload,
        "ts_event": letter.ts_event_us,
        "ts_recv": letter.ts_recv_us,
    }


def test_codec_encode_bar_body_reads_back_with_fastavro(codec: Codec) -> None:
    # Arrange
    bar = _bar()

    # Act
    record = _fastavro_read(codec.encode_bar(bar)[5:], "bar")

    # Assert
    assert record == {
        "instrument": bar.instrument,
        "interval": bar.interval,
        "ts": bar.ts_us,
        "revision": bar.revision,
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "vwap": bar.vwap,
        "trade_count": bar.trade_count,
        "buy_volume": bar.buy_volume,
        "sell_volume": bar.sell_volume,
        "source": bar.source,
        "ts_event": bar.ts_event_us,
        "ts_recv": bar.ts_recv_us,
        "seq": bar.seq,
    }


def test_codec_encode_gap_body_reads_back_with_fastavro(codec: Codec) -> None:
    # Arrange
    gap = _gap(cause=GapCause.SILENCE, provider="failover", tier="T1")

    # Act
    record = _fastavro_read(codec.encode_gap(gap)[5:], "gap")

    # Assert
    assert record == {
        "instrument": gap.instrument,
        "interval": gap.interval,
        "start": gap.start_us,
        "end": gap.end_us,
        "cause": "silence",
        "provider": "failover",
        "tier": "T1",
        "detail": gap.detail,
        "ts_event": gap.detected_at_us,
        "ts_recv": gap.ts_recv_us,
    }


def test_frame_then_unframe_returns_id_and_body() -> None:
    # Arrange
    data = frame(0x01020304, b"body")

    # Act
    schema_id, body = unframe(data)

    # Assert
    assert data[:5] == b"\x00\x01\x02\x03\x04"
    assert schema_id == 0x01020304
    assert bytes(body) == b"body"


# --- DecodeError for everything we cannot read ------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x00\x00\x00\x00"], ids=["empty", "1-byte", "4-bytes"]
)
@pytest.mark.parametrize(
    "decoder", ["decode_trade_batch", "decode_dead_letter", "decode_bar", "decode_gap"]
)
def test_codec_decode_short_message_raises_decode_error(
    codec: Codec, decoder: str, data: bytes
) -> None:
    # Arrange
    decode = getattr(codec, decoder)

    # Act / Assert
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("magic", [1, 0x7F, 0xFF])
def test_codec_decode_trade_batch_wrong_magic_raises_decode_error(codec: Codec, magic: int) -> None:
    # Arrange
    data = bytes([magic]) + codec.encode_trade_batch(_batch())[1:]

    # Act / Assert
    with pytest.raises(DecodeError):
        codec.decode_trade_batch(data)


@pytest.mark.parametrize(
    "decoder", ["decode_trade_batch", "decode_dead_letter", "decode_bar", "decode_gap"]
)
def test_codec_decode_unknown_schema_id_raises_decode_error(codec: Codec, decoder: str) -> None:
    # Arrange
    unknown = max(e["id"] for versions in IDS.values() for e in versions) + 1000
    data = frame(unknown, encode_trade_batch_body(_batch()))

    # Act / Assert
    with pytest.raises(DecodeError, match=str(unknown)):
        getattr(codec, decoder)(data)


def test_codec_decode_trade_batch_dead_letter_message_raises_decode_error(codec: Codec) -> None:
    # Arrange
    data = codec.encode_dead_letter(_dead_letter())

    # Act / Assert
    with pytest.raises(DecodeError, match="dead_letter"):
        codec.decode_trade_batch(data)


def test_codec_decode_bar_trade_batch_message_raises_decode_error(codec: Codec) -> None:
    # Arrange
    data = codec.encode_trade_batch(_batch())

    # Act / Assert
    with pytest.raises(DecodeError, match="trade_batch"):
        codec.decode_bar(data)


@pytest.mark.parametrize(
    "batch",
    [
        _batch(),
        _batch(side=[1, -1, 0]),
        _batch(trade_id=("1", "", "é")),
        _batch(side=[1, 0, -1], trade_id=("x", "y", "z"), ts_event=[INT64_MIN, 0, INT64_MAX]),
    ],
    ids=["plain", "side", "trade_id", "side+trade_id+extremes"],
)
def test_decode_trade_batch_body_every_truncation_raises_decode_error(batch: TradeBatch) -> None:
    # Arrange
    body = encode_trade_batch_body(batch)
    outcomes: dict[int, str] = {}

    # Act
    for length in range(len(body)):
        try:
            decoded = decode_trade_batch_body(memoryview(body[:length]))
        except DecodeError:
            continue
        except Exception as exc:  # any other exception is a bug
            outcomes[length] = f"{type(exc).__name__}: {exc}"
        else:
            outcomes[length] = f"returned a batch of {len(decoded)} trades"

    # Assert
    assert outcomes == {}, (
        f"prefixes of a {len(body)}-byte body not rejected with DecodeError: {outcomes}"
    )


@pytest.mark.parametrize(
    "decoder", ["decode_trade_batch", "decode_dead_letter", "decode_bar", "decode_gap"]
)
def test_codec_decode_every_truncated_message_raises_decode_error(
    codec: Codec, decoder: str
) -> None:
    # Arrange
    data = {
        "decode_trade_batch": codec.encode_trade_batch(
            _batch(side=[1, -1, 0], trade_id=("a", "b", "c"))
        ),
        "decode_dead_letter": codec.encode_dead_letter(_dead_letter(key=b"k", line_number=3)),
        "decode_bar": codec.encode_bar(_bar()),
        "decode_gap": codec.encode_gap(_gap(provider="alpaca", tier="T0")),
    }[decoder]
    decode = getattr(codec, decoder)
    outcomes: dict[int, str] = {}

    # Act
    for length in range(len(data)):
        try:
            result = decode(data[:length])
        except DecodeError:
            continue
        except Exception as exc:  # any other exception is a bug
            outcomes[length] = f"{type(exc).__name__}: {exc}"
        else:
            outcomes[length] = f"returned {result!r}"

    # Assert
    assert outcomes == {}, (
        f"prefixes of a {len(data)}-byte message not rejected with DecodeError: {outcomes}"
    )


@pytest.mark.parametrize("garbage", [b"\x00", b"\x02", b"garbage"])
def test_codec_decode_trade_batch_trailing_garbage_raises_decode_error(
    codec: Codec, garbage: bytes
) -> None:
    # Arrange
    data = codec.encode_trade_batch(_batch()) + garbage

    # Act / Assert
    with pytest.raises(DecodeError):
        codec.decode_trade_batch(data)


def _framed_record(codec: Codec, **overrides: Any) -> bytes:
    record = _record(_batch())
    record.update(overrides)
    return frame(codec.registry.id_for("trade_batch"), _fastavro_body(record))


@pytest.mark.parametrize(
    "index", [[0, 2, 1], [0, -1, 1], [0, 1, 2**31 - 1]], ids=["past-end", "negative", "int32-max"]
)
def test_codec_decode_trade_batch_instrument_index_out_of_range_raises_decode_error(
    codec: Codec, index: list[int]
) -> None:
    # Arrange
    data = _framed_record(codec, instruments=["AAPL", "MSFT"], instrument_index=index)

    # Act / Assert
    with pytest.raises(DecodeError, match="instrument_index"):
        codec.decode_trade_batch(data)


def test_codec_decode_trade_batch_index_into_empty_dictionary_raises_decode_error(
    codec: Codec,
) -> None:
    # Arrange
    data = _framed_record(codec, instruments=[])

    # Act / Assert
    with pytest.raises(DecodeError):
        codec.decode_trade_batch(data)


@pytest.mark.parametrize(
    "overrides",
    [
        {"price": [1.0, 2.0]},
        {"size": [1.0, 2.0, 3.0, 4.0]},
        {"instrument_index": [0, 1]},
        {"ts_event": [1, 2]},
        {"ts_recv": []},
        {"side": [1, -1]},
        {"trade_id": ["a", "b", "c", "d"]},
    ],
    ids=["price", "size", "instrument_index", "ts_event", "ts_recv", "side", "trade_id"],
)
def test_codec_decode_trade_batch_mismatched_column_lengths_raises_decode_error(
    codec: Codec, overrides: dict[str, Any]
) -> None:
    # Arrange
    data = _framed_record(codec, **overrides)

    # Act / Assert
    with pytest.raises(DecodeError, match="lengths"):
        codec.decode_trade_batch(data)


@pytest.mark.parametrize("bad_side", [5, -2, 2, 127, 2**31 - 1])
def test_codec_decode_trade_batch_side_out_of_range_raises_decode_error(
    codec: Codec, bad_side: int
) -> None:
    # Arrange
    data = _framed_record(codec, side=[1, bad_side, -1])

    # Act / Assert
    with pytest.raises(DecodeError, match="side"):
        codec.decode_trade_batch(data)


def test_codec_decode_trade_batch_invalid_utf8_symbol_raises_decode_error(codec: Codec) -> None:
    # Arrange
    body = encode_trade_batch_body(_batch(instruments=("AB", "CD")))
    corrupt = body.replace(b"AB", b"\xff\xfe", 1)

    # Act / Assert
    with pytest.raises(DecodeError):
        codec.decode_trade_batch(frame(codec.registry.id_for("trade_batch"), corrupt))


@pytest.mark.parametrize("branch", [2, -1, 100])
def test_codec_decode_trade_batch_bad_union_branch_raises_decode_error(
    codec: Codec, branch: int
) -> None:
    # Arrange
    body = encode_trade_batch_body(_batch())  # ends: trade_id null, watermark 0, provider null
    corrupt = body[:-3] + _primitive("long", branch) + body[-2:]

    # Act / Assert
    with pytest.raises(DecodeError, match="union"):
        codec.decode_trade_batch(frame(codec.registry.id_for("trade_batch"), corrupt))


def test_codec_decode_trade_batch_of_schema_v1_reads_without_a_provider(codec: Codec) -> None:
    # Arrange: a message a producer of the first TradeBatch schema wrote (id 1)
    batch = _batch(trade_id=("a1", "a2", "a3"))
    record = _record(batch)
    del record["provider"]
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(json.loads(ARCHIVE.read_text())), record)

    # Act
    decoded = codec.decode_trade_batch(frame(1, out.getvalue()))

    # Assert
    assert codec.registry.id_for("trade_batch") != 1
    _assert_batches_equal(decoded, batch)
    assert decoded.provider is None


def test_codec_decode_trade_batch_huge_block_count_raises_decode_error(codec: Codec) -> None:
    # Arrange
    body = (
        _primitive("string", "s") + _primitive("long", 0) + _primitive("long", 2**40) + b"\x00" * 8
    )

    # Act / Assert
    with pytest.raises(DecodeError):
        codec.decode_trade_batch(frame(codec.registry.id_for("trade_batch"), body))


def test_codec_decode_trade_batch_overlong_varint_raises_decode_error(codec: Codec) -> None:
    # Arrange
    body = b"\xff" * 11 + b"\x00"

    # Act / Assert
    with pytest.raises(DecodeError, match="varint"):
        codec.decode_trade_batch(frame(codec.registry.id_for("trade_batch"), body))


def test_decode_trade_batch_body_random_corruptions_raise_only_decode_error() -> None:
    # Arrange: hypothesis is not installed, so a seeded stand-in for a property test
    rng = np.random.default_rng(1234)
    body = encode_trade_batch_body(_batch(side=[1, -1, 0], trade_id=("a", "bb", "")))
    other_exceptions: list[str] = []

    # Act
    for _ in range(3000):
        corrupt = bytearray(body)
        for position in rng.integers(0, len(body), int(rng.integers(1, 4))):
            corrupt[position] = int(rng.integers(0, 256))
        try:
            decode_trade_batch_body(memoryview(bytes(corrupt)))
        except DecodeError:
            pass
        except Exception as exc:  # any other exception escapes an agent's `except DecodeError`
            other_exceptions.append(f"{bytes(corrupt).hex()}: {type(exc).__name__}: {exc}")

    # Assert
    assert other_exceptions == [], (
        f"{len(other_exceptions)} corruptions raised another exception, e.g. {other_exceptions[:3]}"
    )


def test_codec_heartbeat_round_trip_keeps_watermark_and_no_trades(codec: Codec) -> None:
    heartbeat = TradeBatch.heartbeat("simulator", 1_767_623_400_123_456)

    decoded = codec.decode_trade_batch(codec.encode_trade_batch(heartbeat))

    assert len(decoded) == 0 and decoded.instruments == ()
    assert (decoded.source, decoded.watermark_us) == ("simulator", 1_767_623_400_123_456)
