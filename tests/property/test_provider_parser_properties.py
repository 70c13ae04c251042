"""Property tests of the REST and WebSocket provider parsers: any body gives a result, a
Rejected or the parser's documented error, never another exception.

Each parser gets random bytes, random JSON documents, and documents of its documented shape
whose values are mutated (wrong types, NaN and infinities, huge numbers, times far in the past
or the future). Inputs per run (derandomized): finnhub frames 300 random bytes + 300 random
JSON + 300 mutated trade frames, candles 200 + 300; yahoo charts 600; alpha vantage series 400;
fmp 200 random bodies (each through 3 parsers) + 300 statements + 300 prices; alpaca history
200 random bodies (bars and trades) + 300 bars + 300 trades. Total: EXAMPLES_TRIED = 4,000.
"""

from __future__ import annotations

import json
from typing import Any, Final

from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.alpaca_history import MalformedResponseError as AlpacaMalformed
from connectors.alpaca_history import parse_bars, parse_trades
from connectors.alphavantage_series import (
    ApiMessageError,
    KeyRefusedError,
    LimitNote,
    Series,
    parse_intraday,
)
from connectors.alphavantage_series import MalformedResponseError as AlphaMalformed
from connectors.finnhub import Frame as FinnhubFrame
from connectors.finnhub import MalformedResponseError as FinnhubMalformed
from connectors.finnhub import parse_candles, parse_frame
from connectors.fmp_statements import Parsed, Unit, parse_prices, parse_statements
from connectors.yahoo_chart import Chart, ChartError, MalformedChartError, parse_chart

EXAMPLES_TRIED: Final = (
    (300 + 300 + 300) + (200 + 300) + (200 + 400) + (150 + 250) + (200 + 300 + 300)
    + (200 + 300 + 300)
)  # fmt: skip

PROPERTY: Final = settings(deadline=None, derandomize=True, database=None)
RECV_US: Final = 1_749_562_200_000_000  # 2025-06-10T13:30:00Z
OPEN_S: Final = 1_749_562_200

# JSON leaves a provider (or a proxy in front of it) can send.
NUMBERS: Final = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 0.0, 1e308, -1e308, 5e-324, 2**53 + 1, OPEN_S, OPEN_S * 1000]),
)
TIMES: Final = st.sampled_from(
    [
        "2025-06-10T13:30:00Z",
        "2025-06-10T13:30:00.123456789Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2024-02-30T00:00:00Z",
        "99999-01-01T00:00:00Z",
        "2025-06-10 09:30:00",
        "1900-01-01 00:00:00",
        "2025-13-40",
        "2025-06-10",
        "",
    ]
)
LEAVES: Final = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=8), TIMES)
JSON_VALUES: Final = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `values`, sometimes any JSON value in their place."""
    return st.one_of(values, values, values, JSON_VALUES)


def body_of(document: object) -> st.SearchStrategy[bytes]:
    """The document as JSON, sometimes with the NaN/Infinity tokens that JSON does not allow, or
    a number beyond float range."""
    text = json.dumps(document, allow_nan=True)
    return st.sampled_from([text.encode(), text.replace("0", "1e999", 1).encode()])


JSON_BODIES: Final = JSON_VALUES.flatmap(body_of)
PRICE: Final = maybe(st.one_of(st.floats(min_value=0.01, max_value=1e5), NUMBERS))
COLUMN: Final = st.lists(PRICE, max_size=5)


# Finnhub: trade frames and candles.
def finnhub_frames() -> st.SearchStrategy[bytes]:
    trade = st.fixed_dictionaries(
        {},
        optional={
            "s": maybe(st.sampled_from(["AAPL", "BINANCE:BTCUSDT", "", "a b"])),
            "p": PRICE,
            "t": maybe(st.integers(OPEN_S * 1000 - 10**12, OPEN_S * 1000 + 10**12) | NUMBERS),
            "v": PRICE,
            "c": maybe(st.lists(st.sampled_from(["1", "12", "24"]), max_size=3)),
        },
    )
    frame = st.fixed_dictionaries(
        {"type": maybe(st.sampled_from(["trade", "ping", "error"]))},
        optional={"data": maybe(st.lists(maybe(trade), max_size=5)), "msg": maybe(st.text())},
    )
    return frame.flatmap(body_of)


def finnhub_candles() -> st.SearchStrategy[bytes]:
    columns = {
        key: maybe(st.lists(maybe(NUMBERS), max_size=4)) for key in ("t", "o", "h", "l", "c", "v")
    }
    doc = st.fixed_dictionaries({"s": maybe(st.sampled_from(["ok", "no_data"]))}, optional=columns)
    return doc.flatmap(body_of)


def assert_finnhub_frame(body: bytes | str) -> None:
    assert isinstance(parse_frame(body, RECV_US), FinnhubFrame)


@settings(PROPERTY, max_examples=300)
@given(body=st.binary(max_size=200))
@example(body=b"\xff\xfe")
def test_finnhub_parse_frame_random_bytes_never_raises(body: bytes) -> None:
    assert_finnhub_frame(body)


@settings(PROPERTY, max_examples=300)
@given(body=st.one_of(JSON_BODIES, st.text(max_size=60)))
def test_finnhub_parse_frame_random_json_never_raises(body: bytes | str) -> None:
    assert_finnhub_frame(body)


@settings(PROPERTY, max_examples=300)
@given(body=finnhub_frames())
@example(body=b'{"type":"trade","data":[{"s":"AAPL","p":1,"t":1e999,"v":1}]}')
@example(body=b'{"type":"trade","data":[{"s":"AAPL","p":1,"t":18446744073709551615,"v":1}]}')
def test_finnhub_parse_frame_mutated_trades_never_raises(body: bytes) -> None:
    assert_finnhub_frame(body)


@settings(PROPERTY, max_examples=200)
@given(body=st.one_of(st.binary(max_size=100), JSON_BODIES))
def test_finnhub_parse_candles_random_body_raises_only_malformed(body: bytes) -> None:
    try:
        parse_candles(body, "AAPL", "1")
    except FinnhubMalformed:
        pass


@settings(PROPERTY, max_examples=300)
@given(body=finnhub_candles())
@example(body=b'{"s":"ok","t":[1,[2]],"o":[1,1],"h":[1,1],"l":[1,1],"c":[1,1],"v":[1,1]}')
@example(body=b'{"s":"ok","t":[[1]],"o":[[1]],"h":[[1]],"l":[[1]],"c":[[1]],"v":[[1]]}')
@example(body=b'{"s":"ok","t":[18446744073709551615],"o":[1],"h":[1],"l":[1],"c":[1],"v":[1]}')
def test_finnhub_parse_candles_mutated_columns_raise_only_malformed(body: bytes) -> None:
    try:
        parse_candles(body, "AAPL", "1")
    except FinnhubMalformed:
        pass


# Yahoo's chart.
def yahoo_charts() -> st.SearchStrategy[bytes]:
    period = st.fixed_dictionaries(
        {
            "start": maybe(st.just(OPEN_S) | NUMBERS),
            "end": maybe(st.just(OPEN_S + 23_400) | NUMBERS),
        }
    )
    meta = st.fixed_dictionaries(
        {},
        optional={
            "exchangeTimezoneName": maybe(
                st.sampled_from(["America/New_York", "UTC", "Nowhere/X"])
            ),
            "gmtoffset": maybe(st.sampled_from([-14_400, 0, 10**12, -(10**12)]) | NUMBERS),
            "tradingPeriods": maybe(
                st.lists(st.lists(maybe(period), max_size=2), max_size=2)
                | st.fixed_dictionaries(
                    {"regular": st.lists(st.lists(period, max_size=2), max_size=2)}
                )
            ),
            "currentTradingPeriod": maybe(st.fixed_dictionaries({"regular": maybe(period)})),
        },
    )
    quote = st.fixed_dictionaries(
        {}, optional={k: maybe(COLUMN) for k in ("open", "high", "low", "close", "volume")}
    )
    result = st.fixed_dictionaries(
        {},
        optional={
            "meta": maybe(meta),
            "timestamp": maybe(
                st.lists(maybe(st.integers(OPEN_S - 86_400, OPEN_S + 86_400) | NUMBERS), max_size=5)
            ),
            "indicators": maybe(
                st.fixed_dictionaries({"quote": maybe(st.lists(maybe(quote), max_size=2))})
            ),
        },
    )
    chart = st.fixed_dictionaries(
        {"result": maybe(st.lists(maybe(result), max_size=2))},
        optional={"error": st.none() | JSON_VALUES},
    )
    return st.fixed_dictionaries({"chart": maybe(chart)}).flatmap(body_of)


@settings(PROPERTY, max_examples=200 + 400)
@given(
    body=st.one_of(st.binary(max_size=100), JSON_BODIES, yahoo_charts(), yahoo_charts()),
    interval=st.sampled_from(["1m", "5m", "1h", "1d"]),
    include_pre_post=st.booleans(),
)
@example(
    body=b'{"chart":{"result":[{"meta":{"gmtoffset":1e12},"timestamp":[1749562200],'
    b'"indicators":{"quote":[{"open":[1],"high":[1],"low":[1],"close":[1],"volume":[1]}]}}]}}',
    interval="1d",
    include_pre_post=False,
)
@example(
    body=b'{"chart":{"result":[{"timestamp":[1749562200,1749562260],'
    b'"indicators":{"quote":[{"open":[1],"high":[1],"low":[1],"close":[1],"volume":[1]}]}}]}}',
    interval="1m",
    include_pre_post=True,
)
def test_yahoo_parse_chart_any_body_raises_only_chart_errors(
    body: bytes, interval: str, include_pre_post: bool
) -> None:
    try:
        assert isinstance(
            parse_chart(body, "AAPL", interval, include_pre_post=include_pre_post), Chart
        )
    except (ChartError, MalformedChartError):
        pass


# Alpha Vantage's intraday series.
def alphavantage_series() -> st.SearchStrategy[bytes]:
    point = st.fixed_dictionaries(
        {},
        optional={
            k: maybe(st.sampled_from(["200.58", "0", "-1", "NaN", "inf", "1e999", "x"]) | NUMBERS)
            for k in ("1. open", "2. high", "3. low", "4. close", "5. volume")
        },
    )
    meta = st.fixed_dictionaries(
        {}, optional={"6. Time Zone": maybe(st.sampled_from(["US/Eastern", "UTC", "Mars/Base"]))}
    )
    keys = st.one_of(TIMES, st.sampled_from(["2025-06-10 09:30:00", "0001-01-01 00:00:00"]))
    series = st.dictionaries(keys, maybe(point), max_size=4)
    doc = st.fixed_dictionaries(
        {},
        optional={
            "Meta Data": maybe(meta),
            "Time Series (1min)": maybe(series),
            "Note": st.text(max_size=20),
            "Information": st.text(max_size=20),
            "Error Message": st.text(max_size=20),
        },
    )
    return doc.flatmap(body_of)


@settings(PROPERTY, max_examples=150 + 250)
@given(
    body=st.one_of(
        st.binary(max_size=100), JSON_BODIES, alphavantage_series(), alphavantage_series()
    )
)
@example(
    body=b'{"Meta Data":{"6. Time Zone":"US/Eastern"},"Time Series (1min)":{"0001-01-01 00:00:00":'
    b'{"1. open":"1","2. high":"1","3. low":"1","4. close":"1","5. volume":"1"}}}'
)
def test_alphavantage_parse_intraday_any_body_raises_only_documented_errors(body: bytes) -> None:
    try:
        assert isinstance(parse_intraday(body, "AAPL", "1m"), Series | LimitNote)
    except (KeyRefusedError, ApiMessageError, AlphaMalformed):
        pass


# Financial Modeling Prep: statements and daily prices.
STATEMENTS_UNIT: Final = Unit("AAPL", "income_statement", "annual")
PROFILE_UNIT: Final = Unit("AAPL", "profile", "snapshot")
PRICES_UNIT: Final = Unit("AAPL", "prices", "1d")


def fmp_statements() -> st.SearchStrategy[bytes]:
    entry = st.fixed_dictionaries(
        {},
        optional={
            "date": maybe(TIMES | st.sampled_from(["2024-09-28", "0001-01-01", "9999-12-31"])),
            "symbol": maybe(st.sampled_from(["AAPL", "MSFT"])),
            "fillingDate": maybe(TIMES),
            "acceptedDate": maybe(TIMES | st.just("2024-11-01 06:01:36")),
            "revenue": maybe(NUMBERS),
        },
    )
    return st.lists(maybe(entry), max_size=4).flatmap(body_of)


def fmp_prices() -> st.SearchStrategy[bytes]:
    row = st.fixed_dictionaries(
        {},
        optional={
            "date": maybe(
                st.sampled_from(["2024-09-27", "0001-01-01", "9999-12-31", "2024-02-30"])
            ),
            **{k: PRICE for k in ("open", "high", "low", "close", "volume", "vwap")},
        },
    )
    doc = st.fixed_dictionaries(
        {},
        optional={
            "symbol": maybe(st.just("AAPL")),
            "historical": maybe(st.lists(maybe(row), max_size=4)),
        },
    )
    return doc.flatmap(body_of)


@settings(PROPERTY, max_examples=200)
@given(
    body=st.one_of(st.binary(max_size=100), JSON_BODIES),
    content_type=st.sampled_from(["application/json", "text/html; charset=utf-8", ""]),
)
@example(body=b"<!DOCTYPE html><title>\xff</title>", content_type="text/html")
def test_fmp_parsers_random_body_never_raise(body: bytes, content_type: str) -> None:
    for unit in (STATEMENTS_UNIT, PROFILE_UNIT):
        assert isinstance(parse_statements(body, unit, RECV_US, content_type), Parsed)
    assert isinstance(parse_prices(body, PRICES_UNIT, RECV_US, content_type), Parsed)


@settings(PROPERTY, max_examples=300)
@given(body=fmp_statements(), ts_recv_us=st.sampled_from([RECV_US, RECV_US + 999_999]))
def test_fmp_parse_statements_mutated_entries_never_raise(body: bytes, ts_recv_us: int) -> None:
    for unit in (STATEMENTS_UNIT, PROFILE_UNIT):
        assert isinstance(parse_statements(body, unit, ts_recv_us), Parsed)


@settings(PROPERTY, max_examples=300)
@given(body=fmp_prices())
def test_fmp_parse_prices_mutated_rows_never_raise(body: bytes) -> None:
    assert isinstance(parse_prices(body, PRICES_UNIT, RECV_US), Parsed)


# Alpaca's REST history: bars and trades.
def alpaca_pages(key: str) -> st.SearchStrategy[bytes]:
    row = st.fixed_dictionaries(
        {},
        optional={
            "t": maybe(TIMES),
            **{k: PRICE for k in ("o", "h", "l", "c", "v", "p", "s", "n", "vw")},
            "i": maybe(st.integers(0, 2**64 - 1)),
            "tks": maybe(st.sampled_from(["B", "S", "-"])),
        },
    )
    rows = maybe(st.lists(maybe(row), max_size=4))
    doc = st.fixed_dictionaries(
        {key: maybe(st.one_of(rows, st.fixed_dictionaries({"AAPL": rows})))},
        optional={
            "next_page_token": maybe(st.text(max_size=8) | st.none()),
            "symbol": maybe(st.just("AAPL")),
        },
    )
    return doc.flatmap(body_of)


@settings(PROPERTY, max_examples=200)
@given(body=st.one_of(st.binary(max_size=100), JSON_BODIES))
def test_alpaca_history_random_body_raises_only_malformed(body: bytes) -> None:
    for parse in (
        lambda: parse_bars(body, "AAPL"),
        lambda: parse_trades(body, "AAPL", RECV_US),
    ):
        try:
            parse()
        except AlpacaMalformed:
            pass


@settings(PROPERTY, max_examples=300)
@given(body=alpaca_pages("bars"))
@example(body=b'{"bars":{"AAPL":[{"t":"2024-02-30T00:00:00Z","o":1,"h":1,"l":1,"c":1,"v":1}]}}')
@example(body=b'{"bars":[{"t":"99999-01-01T00:00:00Z","o":1,"h":1,"l":1,"c":1,"v":1}]}')
def test_alpaca_history_parse_bars_mutated_rows_raise_only_malformed(body: bytes) -> None:
    try:
        parse_bars(body, "AAPL", "application/json")
    except AlpacaMalformed:
        pass


@settings(PROPERTY, max_examples=300)
@given(body=alpaca_pages("trades"))
@example(body=b'{"trades":{"AAPL":[{"t":"1677-09-21T00:12:43Z","p":1,"s":1,"i":1}]}}')
def test_alpaca_history_parse_trades_mutated_rows_raise_only_malformed(body: bytes) -> None:
    try:
        parse_trades(body, "AAPL", RECV_US, content_type="application/json")
    except AlpacaMalformed:
        pass
