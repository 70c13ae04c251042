"""Property tests of every Codec.decode_*: bad bytes give DecodeError, never another exception.

Inputs per run (derandomized, so the same every run): 14 record kinds x (150 framed random
bodies + 100 valid records written by fastavro from the committed schema, with hostile values +
100 of those truncated or with one byte changed) = 4,900; 300 unframed random messages against
all 14 decoders = 4,200 decodes; 200 wrong schema ids x 14 = 2,800 decodes; 14 x 4 huge array
counts = 56; 100 records of the archived TradeBatch v1; 200 fiscal dates. Total:
EXAMPLES_TRIED = 12,256 decodes (at most: hypothesis stops early once a strategy is exhausted).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any, Final

import fastavro
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.codec import Codec, frame
from shared.errors import DecodeError
from shared.schema_ids import CommittedSchemas

KINDS: Final = (
    "trade_batch",
    "bar",
    "bar_batch",
    "quote_batch",
    "provider_bar_batch",
    "fundamental_statement",
    "feed_event",
    "gap",
    "instrument_status",
    "listing",
    "pm_price_batch",
    "match",
    "arbitrage",
    "dead_letter",
)
DECODER: Final = {
    "trade_batch": "decode_trade_batch",
    "bar": "decode_bar",
    "bar_batch": "decode_bar_batch",
    "quote_batch": "decode_quote_batch",
    "provider_bar_batch": "decode_provider_bars",
    "fundamental_statement": "decode_fundamental",
    "feed_event": "decode_feed_event",
    "gap": "decode_gap",
    "instrument_status": "decode_instrument_status",
    "listing": "decode_listing",
    "pm_price_batch": "decode_pm_price_batch",
    "match": "decode_match",
    "arbitrage": "decode_arbitrage",
    "dead_letter": "decode_dead_letter",
}
FRAMED_BODIES: Final = 150
VALID_RECORDS: Final = 100
MUTATED_RECORDS: Final = 100
UNFRAMED: Final = 300
WRONG_IDS: Final = 200
ARCHIVED: Final = 100
FISCAL_DAYS: Final = 200
HUGE_COUNTS: Final = (2**31, 2**62, -(2**62), 2**63 - 1)
EXAMPLES_TRIED: Final = (
    len(KINDS) * (FRAMED_BODIES + VALID_RECORDS + MUTATED_RECORDS)
    + len(KINDS) * (UNFRAMED + WRONG_IDS + len(HUGE_COUNTS))
    + ARCHIVED
    + FISCAL_DAYS
)

REGISTRY: Final = CommittedSchemas()
CODEC: Final = Codec(REGISTRY)
PROPERTY: Final = settings(deadline=None, derandomize=True, database=None)

# Long values a feed or an attacker can send: realistic micros, the int64 edges, dates far in
# the past or the future (year 1 and year 9999 in micros and in days).
LONGS: Final = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from(
        [0, -1, 1, 2**63 - 1, -(2**63), 1_710_250_201_123_456, -62_135_596_800_000_000]
    ),
    st.integers(min_value=1_600_000_000_000_000, max_value=1_900_000_000_000_000),
)
INTS: Final = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.sampled_from([0, -1, 2**31 - 1, -(2**31), 2_932_896, -719_162]),  # 9999-12-31, 0001-01-01
)
DOUBLES: Final = st.floats(allow_nan=True, allow_infinity=True)
TEXT: Final = st.one_of(st.text(max_size=12), st.sampled_from(["AAPL", "1m", "open", "alpaca"]))


def _decode(kind: str, data: bytes) -> object:
    decode: Callable[[bytes], object] = getattr(CODEC, DECODER[kind])
    return decode(data)


def assert_decodes_or_refuses(kind: str, data: bytes) -> object | None:
    """Decode `data` as `kind`; a DecodeError is a clear refusal, anything else fails the test."""
    try:
        return _decode(kind, data)
    except DecodeError:
        return None


def _plain(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    return schema


def _strategy(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of an Avro schema (logical types stripped), with hostile numbers and text."""
    if isinstance(schema, list):
        return st.one_of(*[_strategy(s, named) for s in schema])
    if isinstance(schema, str):
        primitive = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": INTS,
            "long": LONGS,
            "float": st.floats(width=32),
            "double": DOUBLES,
            "string": TEXT,
            "bytes": st.binary(max_size=16),
        }
        if schema in primitive:
            return primitive[schema]
        return st.deferred(lambda: named[schema])
    kind = schema["type"]
    if kind == "record":
        fields = {f["name"]: _strategy(f["type"], named) for f in schema["fields"]}
        found = st.fixed_dictionaries(fields)
        _name(schema, named, found)
        return found
    if kind == "enum":
        found = st.sampled_from(schema["symbols"])
        _name(schema, named, found)
        return found
    if kind == "array":
        return st.lists(_strategy(schema["items"], named), max_size=6)
    if kind == "map":
        return st.dictionaries(TEXT, _strategy(schema["values"], named), max_size=4)
    return _strategy(kind, named)


def _name(schema: dict[str, Any], named: dict[str, Any], found: st.SearchStrategy[Any]) -> None:
    named[schema["name"]] = found
    if "namespace" in schema:
        named[f"{schema['namespace']}.{schema['name']}"] = found


def _writer(schema_id: int) -> tuple[Any, st.SearchStrategy[dict[str, Any]]]:
    raw = _plain(json.loads(REGISTRY.schema_for(schema_id).text))
    raw.setdefault("namespace", "marketstream.v1")
    return fastavro.parse_schema(raw), _strategy(raw, {})


def _body(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


WRITERS: Final = {kind: _writer(REGISTRY.id_for(kind)) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
@settings(PROPERTY, max_examples=FRAMED_BODIES)
@given(body=st.binary(max_size=256))
@example(body=b"")
@example(body=b"\x02")  # a one-long array whose long is missing
@example(body=b"\xff" * 11)  # an overlong varint
def test_decode_random_body_with_right_id_refuses_with_decode_error(kind: str, body: bytes) -> None:
    assert_decodes_or_refuses(kind, frame(CODEC.schema_id(kind), body))


@pytest.mark.parametrize("kind", KINDS)
@settings(PROPERTY, max_examples=VALID_RECORDS)
@given(data=st.data())
def test_decode_valid_record_with_hostile_values_decodes_or_refuses(
    kind: str, data: st.DataObject
) -> None:
    schema, records = WRITERS[kind]
    record = data.draw(records)
    decoded = assert_decodes_or_refuses(kind, frame(CODEC.schema_id(kind), _body(schema, record)))
    if kind == "trade_batch" and decoded is not None:  # the numba path reads what fastavro wrote
        assert np.array_equal(decoded.price, np.asarray(record["price"]), equal_nan=True)  # type: ignore[attr-defined]
        assert decoded.ts_event_us.tolist() == record["ts_event"]  # type: ignore[attr-defined]


@settings(PROPERTY, max_examples=FISCAL_DAYS)
@given(days=INTS)
@example(days=-719_163)  # the day before 0001-01-01: OverflowError escaped decode_fundamental
@example(days=2_932_897)  # the day after 9999-12-31
def test_decode_fundamental_fiscal_date_beyond_years_1_to_9999_refuses(days: int) -> None:
    schema, _ = WRITERS["fundamental_statement"]
    record = {
        "symbol": "AAPL",
        "statement": "income_statement",
        "period": "annual",
        "fiscal_date": days,
        "provider": "fmp",
        "body": "{}",
        "ts_event": 1_730_440_896_000_000,
        "ts_recv": 1_730_440_896_000_000,
    }
    data = frame(CODEC.schema_id("fundamental_statement"), _body(schema, record))
    if -719_162 <= days <= 2_932_896:
        assert CODEC.decode_fundamental(data).fiscal_date
    else:
        with pytest.raises(DecodeError):
            CODEC.decode_fundamental(data)


@pytest.mark.parametrize("kind", KINDS)
@settings(PROPERTY, max_examples=MUTATED_RECORDS)
@given(data=st.data())
def test_decode_truncated_or_corrupted_record_refuses_with_decode_error(
    kind: str, data: st.DataObject
) -> None:
    schema, records = WRITERS[kind]
    body = bytearray(_body(schema, data.draw(records)))
    if data.draw(st.booleans()) or not body:
        body = body[: data.draw(st.integers(min_value=0, max_value=max(len(body) - 1, 0)))]
    else:
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    assert_decodes_or_refuses(kind, frame(CODEC.schema_id(kind), bytes(body)))


@settings(PROPERTY, max_examples=UNFRAMED)
@given(data=st.binary(max_size=64))
@example(data=b"")
@example(data=b"\x01\x00\x00\x00\x01")  # magic byte 1
@example(data=b"\x00\x00\x00")  # a short header
def test_decode_arbitrary_bytes_refuses_with_decode_error(data: bytes) -> None:
    for kind in KINDS:
        assert_decodes_or_refuses(kind, data)


@settings(PROPERTY, max_examples=WRONG_IDS)
@given(
    schema_id=st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 40)),
    body=st.binary(max_size=32),
)
@example(schema_id=2**32 - 1, body=b"")
def test_decode_wrong_schema_id_refuses_with_decode_error(schema_id: int, body: bytes) -> None:
    data = frame(schema_id, body)
    for kind in KINDS:
        if schema_id in REGISTRY.by_id and REGISTRY.by_id[schema_id].name == kind:
            assert_decodes_or_refuses(kind, data)
        else:
            with pytest.raises(DecodeError):
                _decode(kind, data)


def _zigzag(value: int) -> bytes:
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("count", HUGE_COUNTS)
def test_decode_huge_array_count_refuses_quickly(kind: str, count: int) -> None:
    """An array header claiming billions of items, after a short string, then nothing."""
    body = b"\x02A" + _zigzag(count) * 3 + b"\x00"
    assert_decodes_or_refuses(kind, frame(CODEC.schema_id(kind), body))


ARCHIVED_IDS: Final = sorted(
    (entry.name, schema_id)
    for schema_id, entry in REGISTRY.by_id.items()
    if schema_id != REGISTRY.id_for(entry.name)
)


@pytest.mark.parametrize(("kind", "schema_id"), ARCHIVED_IDS or [("trade_batch", 1)])
@settings(PROPERTY, max_examples=ARCHIVED)
@given(data=st.data())
def test_decode_archived_version_record_decodes_or_refuses(
    kind: str, schema_id: int, data: st.DataObject
) -> None:
    schema, records = _writer(schema_id)
    body = _body(schema, data.draw(records))
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(0, len(body)))]
    assert_decodes_or_refuses(kind, frame(schema_id, body))
