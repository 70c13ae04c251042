"""Property tests of what clients send the gateways: WebSocket requests and channel names give
a Request or ProtocolError, backfill bodies a checked request or BadRequestError, nothing else.

Inputs per run (derandomized): parse_request 300 random texts + 300 random JSON values + 400
mutated subscribe messages; parse_channel 400 names; parse_backfill 300 random JSON values +
400 mutated requests. Total: EXAMPLES_TRIED = 2,100 messages.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateways.ops_api import parse_backfill
from gateways.params import BadRequestError
from gateways.ws.protocol import Channel, ProtocolError, Request, parse_channel, parse_request
from shared.codec import Codec
from shared.models import Gap, GapCause
from shared.schema_ids import CommittedSchemas

RANDOM_TEXT: Final = 300
RANDOM_JSON: Final = 300
SUBSCRIBES: Final = 400
CHANNELS: Final = 400
BACKFILL_JSON: Final = 300
BACKFILLS: Final = 400
EXAMPLES_TRIED: Final = (
    RANDOM_TEXT + RANDOM_JSON + SUBSCRIBES + CHANNELS + BACKFILL_JSON + BACKFILLS
)

PROPERTY: Final = settings(deadline=None, derandomize=True, database=None)
MAX_SNAPSHOT: Final = 1000
CODEC: Final = Codec(CommittedSchemas())

NUMBERS: Final = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1, MAX_SNAPSHOT, MAX_SNAPSHOT + 1, 2**63 - 1, 2**63, 2**64 - 1]),
)
TIMES: Final = st.sampled_from(
    [
        "2025-06-10T13:30:00Z",
        "2025-06-11T13:30:00+02:00",
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00-14:00",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:59:59Z",
        "2025-06-10T13:30:00",
        "2025-02-30T00:00:00Z",
    ]
)
LEAVES: Final = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=10), TIMES)
JSON_VALUES: Final = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
CHANNEL_NAMES: Final = st.one_of(
    st.sampled_from(
        [
            "bars.1m.AAPL",
            "bars.1m.*",
            "bars.99999999999999999999m.AAPL",
            "bars.0m.AAPL",
            "bars.-1m.AAPL",
            "bars..AAPL",
            "bars.1m.",
            "trades.BRK.B",
            "trades.*",
            "quotes.",
            "arb.kalshi:X|polymarket:Y",
            "arb." + "x" * 1000,
            "trades." + "A" * 1000,
            "trades.\x00",
            "trades.a\u0301",
        ]
    ),
    st.builds(
        lambda kind, middle, rest: f"{kind}.{middle}.{rest}",
        st.sampled_from(["bars", "trades", "quotes", "arb", "x"]),
        st.text(max_size=6),
        st.text(max_size=6),
    ),
    st.text(max_size=20),
)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `values`, sometimes any JSON value in their place."""
    return st.one_of(values, values, values, JSON_VALUES)


def assert_request_or_protocol_error(raw: str | bytes) -> None:
    try:
        assert isinstance(parse_request(raw, MAX_SNAPSHOT), Request)
    except ProtocolError:
        pass


@settings(PROPERTY, max_examples=RANDOM_TEXT)
@given(raw=st.one_of(st.text(max_size=80), st.binary(max_size=80)))
@example(raw=b"\xff\xfe{}")
@example(raw="[" * 100_000)
@example(raw='{"op":"subscribe","channels":' + "[" * 1000 + "]" * 1000 + "}")
def test_parse_request_random_text_raises_only_protocol_error(raw: str | bytes) -> None:
    assert_request_or_protocol_error(raw)


@settings(PROPERTY, max_examples=RANDOM_JSON)
@given(value=JSON_VALUES)
def test_parse_request_random_json_raises_only_protocol_error(value: object) -> None:
    assert_request_or_protocol_error(json.dumps(value))


@settings(PROPERTY, max_examples=SUBSCRIBES)
@given(
    message=st.fixed_dictionaries(
        {"op": maybe(st.sampled_from(["subscribe", "unsubscribe", "ping"]))},
        optional={
            "channels": maybe(st.lists(maybe(CHANNEL_NAMES), max_size=4)),
            "snapshot": maybe(NUMBERS),
            "resume": maybe(st.dictionaries(CHANNEL_NAMES, maybe(NUMBERS), max_size=3)),
        },
    )
)
@example(message={"op": "subscribe", "channels": ["trades.AAPL"] * 10_000})
@example(message={"op": "subscribe", "channels": ["trades.AAPL"], "resume": {"x": -1}})
def test_parse_request_mutated_subscribe_raises_only_protocol_error(
    message: dict[str, Any],
) -> None:
    assert_request_or_protocol_error(json.dumps(message))


@settings(PROPERTY, max_examples=CHANNELS)
@given(name=st.one_of(CHANNEL_NAMES, JSON_VALUES))
def test_parse_channel_any_name_raises_only_protocol_error(name: object) -> None:
    try:
        assert isinstance(parse_channel(name), Channel)
    except ProtocolError:
        pass


def assert_backfill_or_bad_request(body: object) -> None:
    """A checked request is one the handler can publish: its Gap encodes."""
    try:
        wanted = parse_backfill(body)
    except BadRequestError:
        return
    gap = Gap(
        instrument=wanted["instrument"],
        interval=wanted["interval"],
        start_us=wanted["start_us"],
        end_us=wanted["end_us"],
        cause=GapCause.MANUAL,
        detail="asked for by POST /ops/backfill",
        detected_at_us=1_749_562_200_000_000,
        ts_recv_us=1_749_562_200_000_000,
        provider=wanted["provider"],
    )
    CODEC.encode_gap(gap)


@settings(PROPERTY, max_examples=BACKFILL_JSON)
@given(value=JSON_VALUES)
def test_parse_backfill_random_json_raises_only_bad_request(value: object) -> None:
    assert_backfill_or_bad_request(orjson.loads(json.dumps(value)))


@settings(PROPERTY, max_examples=BACKFILLS)
@given(
    body=st.fixed_dictionaries(
        {
            "instrument": maybe(
                st.sampled_from(["AAPL", "BRK.B", "", "a" * 100, "'; DROP TABLE bars; --"])
            ),
            "interval": maybe(st.sampled_from(["1m", "5m", "1d", "0m", "99999999999999999999h"])),
        },
        optional={
            "start": maybe(TIMES | NUMBERS),
            "end": maybe(TIMES | NUMBERS),
            "priority": maybe(st.integers(-1, 10)),
            "provider": maybe(st.sampled_from(["alpaca", "yahoo"])),
        },
    )
)
@example(body={"instrument": "AAPL", "interval": "1m", "start": 2**63 - 1, "end": 2**63})
@example(body={"instrument": "AAPL", "interval": "1m", "start": -(2**63), "end": -(2**63) + 1})
def test_parse_backfill_mutated_request_raises_only_bad_request(body: dict[str, Any]) -> None:
    assert_backfill_or_bad_request(orjson.loads(json.dumps(body)))
