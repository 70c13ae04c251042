"""Alpaca's REST history against the fake on 127.0.0.1: bars and trades arrive exactly across
pages, a refused key is fatal without showing it, 429s are waited out to the announced reset,
bodies that are not Alpaca's JSON are clear errors; and the parsers, on Alpaca's own examples."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from conftest import run_module

from connectors.alpaca import AlpacaConfig
from connectors.alpaca_history import (
    AlpacaHistory,
    MalformedResponseError,
    RateLimitedError,
    alpaca_timeframe,
    parse_bars,
    parse_trades,
    rate_limit_wait_s,
)
from connectors.budget import Limit, Priority, RequestBudget
from connectors.fakes.alpaca import KEY_ID, SECRET_KEY
from connectors.fakes.alpaca_rest import HTML_BAD_GATEWAY, FakeAlpacaRest, bars_in, trades_in
from connectors.polled_bars import Bars
from shared.errors import FatalError, TransientError
from shared.models import Side, TradeBatch

ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000  # µs in a second
NY_MIDNIGHT_S = 1_710_216_000  # 2024-03-12T04:00:00Z, a Tuesday's start in New York (EDT)
OPEN_S = 1_710_250_200  # 2024-03-12T13:30:00Z, 09:30 in New York
CLOSE_S = 1_710_273_600  # 2024-03-12T20:00:00Z, 16:00 in New York
SECRET_ID = "AKFZ3Q7LM2XW9RTY4B6E"
SECRET = "p9Wm2Qx7Lr4Tz8Kv1Nb6Hc3Jd5Fg0Sa"


def _history(fake: FakeAlpacaRest, **options: Any) -> AlpacaHistory:
    settings = {"rest_url": fake.url, "key_id": KEY_ID, "secret_key": SECRET_KEY}
    settings |= {k: options.pop(k) for k in ("feed", "key_id", "secret_key") if k in options}
    return AlpacaHistory(AlpacaConfig(**settings), **options)


def _expected_bars(symbol: str, timeframe: str, start_s: int, end_s: int, crypto: bool = False):  # type: ignore[no-untyped-def]
    """The fake's bars starting in [start_s, end_s), as Bars rows (µs, o, h, l, c, v)."""
    found = bars_in(symbol, timeframe, start_s * 10**9, end_s * 10**9 - 1, crypto=crypto)
    return [
        (t // 1000, o, h, low, c, v)
        for t, o, h, low, c, v in zip(*(found[k].tolist() for k in "tohlcv"), strict=True)
    ]


def _expected_trades(symbol: str, start_s: int, end_s: int, crypto: bool = False):  # type: ignore[no-untyped-def]
    found = trades_in(symbol, start_s * 10**9, end_s * 10**9 - 1, crypto=crypto)
    return list(
        zip(
            (found.ts_ns // 1000).tolist(),
            found.price.tolist(),
            found.size.tolist(),
            [str(i) for i in found.trade_id.tolist()],
            strict=True,
        )
    )


def _trade_rows(batches: list[TradeBatch]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for b in batches:
        assert b.trade_id is not None
        columns = (b.ts_event_us.tolist(), b.price.tolist(), b.size.tolist(), b.trade_id)
        rows += zip(*columns, strict=True)
    return rows


async def _all_trades(
    history: AlpacaHistory, symbol: str, start_s: int, end_s: int
) -> list[TradeBatch]:
    async with asyncio.timeout(10):
        return [b async for b in history.trades(symbol, start_s * S, end_s * S)]


async def _bars(
    history: AlpacaHistory, symbol: str, interval: str, start_s: int, end_s: int
) -> Bars:
    async with asyncio.timeout(10):
        return await history.bars(symbol, interval, start_s * S, end_s * S)


# bars


async def test_alpaca_history_regular_session_minute_bars_over_four_pages_are_exact() -> None:
    # Arrange
    async with FakeAlpacaRest() as fake, _history(fake, page_limit=100) as history:
        # Act
        bars = await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)

    # Assert: 390 minutes from 09:30 to 16:00 New York, each once, in order
    assert len(bars) == 390
    assert bars.ts_us.tolist() == [(OPEN_S + 60 * i) * S for i in range(390)]
    assert bars.rows() == _expected_bars("AAPL", "1Min", OPEN_S, CLOSE_S)
    assert 150 < bars.open[0] < 200 and (bars.volume > 0).all()  # AAPL in March 2024
    assert [r.query["limit"] for r in fake.requests] == ["100"] * 4
    assert [r.query.get("page_token") is None for r in fake.requests] == [True, False, False, False]
    first = fake.requests[0]
    assert first.path == "/v2/stocks/bars"
    assert first.query == {
        "symbols": "AAPL",
        "timeframe": "1Min",
        "start": "2024-03-12T13:30:00.000000Z",
        "end": "2024-03-12T19:59:59.999999Z",  # Alpaca's end is inclusive; ours is not
        "limit": "100",
        "sort": "asc",
        "feed": "iex",
        "adjustment": "raw",
    }


async def test_alpaca_history_whole_day_has_no_repeat_at_page_or_range_seams() -> None:
    # Arrange: a New York day with its extended hours; the same day in two adjacent ranges
    day_end_s = NY_MIDNIGHT_S + 86_400
    expected = _expected_bars("AAPL", "1Min", NY_MIDNIGHT_S, day_end_s)
    async with FakeAlpacaRest() as fake, _history(fake, page_limit=100) as history:
        # Act
        whole = await _bars(history, "AAPL", "1m", NY_MIDNIGHT_S, day_end_s)
        pages = len(fake.requests)
        morning = await _bars(history, "AAPL", "1m", NY_MIDNIGHT_S, OPEN_S)
        rest = await _bars(history, "AAPL", "1m", OPEN_S, day_end_s)

    # Assert
    assert len(whole) == len(expected) > 390  # the regular session and sparse extended hours
    assert whole.rows() == expected
    assert pages == math.ceil(len(expected) / 100)
    assert morning.rows() + rest.rows() == expected
    assert len(set(whole.ts_us.tolist())) == len(whole)


@pytest.mark.parametrize(
    ("interval", "timeframe"),
    [("1m", "1Min"), ("5m", "5Min"), ("15m", "15Min"), ("30m", "30Min"), ("60m", "1Hour"),
     ("1h", "1Hour"), ("4h", "4Hour"), ("1d", "1Day")],
)  # fmt: skip
def test_alpaca_timeframe_of_our_interval_is_alpacas_name(interval: str, timeframe: str) -> None:
    assert alpaca_timeframe(interval) == timeframe


@pytest.mark.parametrize("interval", ["1s", "30s", "7m", "1w", "1Min", ""])
def test_alpaca_timeframe_of_an_interval_alpaca_lacks_raises(interval: str) -> None:
    with pytest.raises(ValueError):
        alpaca_timeframe(interval)


async def test_alpaca_history_intervals_fold_to_the_expected_bars() -> None:
    # Arrange
    week_s = NY_MIDNIGHT_S - 86_400  # Monday 2024-03-11, New York midnight
    async with FakeAlpacaRest() as fake, _history(fake) as history:
        # Act
        five = await _bars(history, "MSFT", "5m", OPEN_S, CLOSE_S)
        hours = await _bars(history, "MSFT", "1h", NY_MIDNIGHT_S, NY_MIDNIGHT_S + 86_400)
        days = await _bars(history, "MSFT", "1d", week_s, week_s + 7 * 86_400)

    # Assert
    assert len(five) == 78 and five.rows() == _expected_bars("MSFT", "5Min", OPEN_S, CLOSE_S)
    assert hours.ts_us.tolist() == [(NY_MIDNIGHT_S + 3600 * h) * S for h in range(4, 20)]
    # one bar per weekday, at midnight New York (04:00Z in EDT); none on the weekend
    assert days.ts_us.tolist() == [(week_s + 86_400 * d) * S for d in range(5)]
    assert days.rows() == _expected_bars("MSFT", "1Day", week_s, week_s + 7 * 86_400)
    assert [r.query["timeframe"] for r in fake.requests] == ["5Min", "1Hour", "1Day"]
    # a day's bar holds its minutes
    minutes = _expected_bars("MSFT", "1Min", NY_MIDNIGHT_S, NY_MIDNIGHT_S + 86_400)
    assert days.volume[1] == sum(m[5] for m in minutes)
    assert days.high[1] == max(m[2] for m in minutes)


# trades


async def test_alpaca_history_trade_pages_are_one_batch_each_with_exact_values() -> None:
    # Arrange
    end_s = OPEN_S + 3600
    expected = _expected_trades("AAPL", OPEN_S, end_s)
    async with FakeAlpacaRest() as fake, _history(fake, page_limit=250) as history:
        before_us = time.time_ns() // 1000

        # Act
        batches = await _all_trades(history, "AAPL", OPEN_S, end_s)
        after_us = time.time_ns() // 1000

    # Assert
    assert len(expected) > 500
    assert [len(b) for b in batches] == [250] * (len(expected) // 250) + [len(expected) % 250]
    assert len(fake.requests) == len(batches)
    assert _trade_rows(batches) == expected
    for batch in batches:
        assert batch.source == "alpaca-history" and batch.provider == "alpaca"
        assert batch.instruments == ("AAPL",) and batch.side is None  # stocks say no side
        assert before_us <= int(batch.ts_recv_us[0]) <= after_us
    assert fake.requests[0].path == "/v2/stocks/trades"


async def test_alpaca_history_crypto_uses_v1beta3_and_keeps_the_taker_side() -> None:
    # Arrange
    end_s = OPEN_S + 3600
    async with FakeAlpacaRest() as fake, _history(fake, feed="crypto", page_limit=200) as history:
        # Act
        bars = await _bars(history, "BTC/USD", "1m", OPEN_S, end_s)
        batches = await _all_trades(history, "BTC/USD", OPEN_S, end_s)

    # Assert
    assert bars.rows() == _expected_bars("BTC/USD", "1Min", OPEN_S, end_s, crypto=True)
    assert len(bars) == 60 and 60_000 < bars.close[0] < 80_000
    assert _trade_rows(batches) == _expected_trades("BTC/USD", OPEN_S, end_s, crypto=True)
    found = trades_in("BTC/USD", OPEN_S * 10**9, end_s * 10**9 - 1, crypto=True)
    sides = np.concatenate([b.side for b in batches if b.side is not None]).tolist()
    assert sides == [Side.BUY if k == "B" else Side.SELL for k in found.taker.tolist()]
    assert {r.path for r in fake.requests} == {
        "/v1beta3/crypto/us/bars",
        "/v1beta3/crypto/us/trades",
    }
    assert all("feed" not in r.query and "adjustment" not in r.query for r in fake.requests)


async def test_alpaca_history_range_and_symbol_are_checked_before_any_request() -> None:
    async with FakeAlpacaRest() as fake, _history(fake) as history:
        with pytest.raises(ValueError, match="empty range"):
            await history.bars("AAPL", "1m", OPEN_S * S, OPEN_S * S)
        with pytest.raises(ValueError, match="whitespace"):
            await _all_trades(history, "AA PL", OPEN_S, CLOSE_S)
        with pytest.raises(ValueError, match="no 1s bars: its shortest are 1Min"):
            await history.bars("AAPL", "1s", OPEN_S * S, CLOSE_S * S)
    assert fake.requests == []


# refusals and limits


@pytest.mark.parametrize("status", [401, 403])
async def test_alpaca_history_refused_key_is_fatal_on_one_line_without_the_keys(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Arrange
    caplog.set_level(logging.DEBUG)
    async with FakeAlpacaRest(refusal_status=status) as fake:
        async with _history(fake, key_id=SECRET_ID, secret_key=SECRET) as history:
            # Act
            with pytest.raises(FatalError) as raised:
                await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)

    # Assert
    message = str(raised.value)
    assert f"Alpaca refused the API key for alpaca AAPL 1m bars (HTTP {status}: " in message
    assert "ALPACA_API_KEY and ALPACA_SECRET_KEY" in message and "\n" not in message
    said = "request is not authorized (code 40110000)" if status == 401 else "forbidden."
    assert said in message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (SECRET_ID, SECRET):
        assert secret not in message and secret not in repr(raised.value.__cause__)
        assert secret not in logged
    assert (fake.refused, len(fake.requests)) == (1, 1)  # never asked again


def test_alpaca_history_missing_keys_are_fatal_before_any_request() -> None:
    with pytest.raises(FatalError, match="ALPACA_API_KEY and ALPACA_SECRET_KEY"):
        AlpacaHistory(AlpacaConfig(key_id=None, secret_key=None))


async def test_alpaca_history_rate_limited_waits_for_the_announced_reset() -> None:
    # Arrange: three requests a second; eight pages to fetch
    async with FakeAlpacaRest() as fake, _history(fake, page_limit=50) as history:
        fake.rate_limit(3, window_s=1)

        # Act
        bars = await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)

    # Assert: every bar, no request before a reset the fake announced
    assert bars.rows() == _expected_bars("AAPL", "1Min", OPEN_S, CLOSE_S)
    assert fake.rate_limited >= 1 and history.rate_limited == fake.rate_limited
    assert fake.early == 0
    statuses = [r.status for r in fake.requests]
    assert statuses.count(200) == 8 and statuses.count(429) == fake.rate_limited


async def test_alpaca_history_rate_limited_defers_the_shared_budget() -> None:
    # Arrange
    budget = RequestBudget("alpaca", [Limit(200, 60.0)])
    async with FakeAlpacaRest() as fake:
        fake.rate_limit(2, window_s=1, retry_after=True)
        async with _history(
            fake, page_limit=100, budget=budget, priority=Priority.BACKFILL
        ) as history:
            # Act
            bars = await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)

    # Assert: one grant per request sent, 429s included, and none sent early
    assert len(bars) == 390
    assert budget.granted == len(fake.requests) == 4 + fake.rate_limited
    assert fake.rate_limited >= 1 and fake.early == 0


async def test_alpaca_history_reset_beyond_max_wait_raises_rate_limited_at_once() -> None:
    # Arrange: the window's quota spent, the reset an hour away
    async with FakeAlpacaRest() as fake, _history(fake, max_wait_s=5.0) as history:
        fake.rate_limit(0, window_s=3600)
        started = time.monotonic()

        # Act
        with pytest.raises(RateLimitedError) as raised:
            await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)

    # Assert
    assert isinstance(raised.value, TransientError)
    assert 3590 <= raised.value.retry_after_s <= 3601
    assert "HTTP 429: too many requests." in str(raised.value)
    assert time.monotonic() - started < 2 and len(fake.requests) == 1


def test_rate_limit_wait_prefers_retry_after_then_the_reset() -> None:
    now_s = 1_710_250_230.4
    assert rate_limit_wait_s("3", "1710250290", now_s) == 3.0
    assert rate_limit_wait_s(None, "1710250232", now_s) == pytest.approx(1.6)
    assert rate_limit_wait_s(None, "1710250200", now_s) == 0.0  # already past
    assert rate_limit_wait_s(None, None, now_s) is None
    assert rate_limit_wait_s("soon", "later", now_s) is None


# bodies that are not Alpaca's


GOOD_BAR: dict[str, Any] = {
    "t": "2024-03-12T13:30:00Z", "o": 172.82, "h": 173.05, "l": 172.7, "c": 173.0, "v": 2215,
    "n": 31, "vw": 172.88,
}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "content_type", "error", "match"),
    [
        (200, "<html><head><title>Sign in to the network</title></head></html>", "text/html",
         MalformedResponseError, r"AAPL 1m bars: Alpaca answered an HTML page \('Sign in to the network'\), not JSON"),
        (200, '{"bars": {"AAPL": [{"t": "2024-03-12T13:30:00Z", "o": 17', "application/json",
         MalformedResponseError, "answered '{\"bars\".*not JSON"),
        (200, '{"bars": "AAPL", "next_page_token": null}', "application/json",
         MalformedResponseError, "bars of AAPL is a JSON str, not a list"),
        (200, orjson.dumps({"bars": {"AAPL": [{**GOOD_BAR, "o": None}]}}), "application/json",
         MalformedResponseError, r"\[0\]\.o None is not a number"),
        (200, orjson.dumps({"bars": {"AAPL": [{**GOOD_BAR, "t": "2024-03-12 13:30"}]}}),
         "application/json", MalformedResponseError, "is not an RFC 3339 time"),
        (200, '{"message": "ok"}', "application/json", MalformedResponseError, "has no 'bars'"),
        (502, HTML_BAD_GATEWAY, "text/html", TransientError,
         r"HTTP 502: an HTML page \('502 Bad Gateway'\)"),
        (500, '{"code": 50010000, "message": "internal server error occurred"}',
         "application/json", TransientError, "HTTP 500: internal server error occurred"),
        (422, '{"code": 42210000, "message": "invalid timeframe"}', "application/json",
         FatalError, "HTTP 422: invalid timeframe"),
        (403, '{"message": "subscription does not permit querying recent SIP data"}',
         "application/json", FatalError, "Alpaca plan does not allow it"),
    ],
)  # fmt: skip
async def test_alpaca_history_body_that_is_not_alpacas_json_is_a_clear_error(
    status: int, body: str | bytes, content_type: str, error: type[Exception], match: str
) -> None:
    # Arrange
    async with FakeAlpacaRest() as fake, _history(fake) as history:
        fake.answer_next(status, body, content_type=content_type)

        # Act, Assert
        with pytest.raises(error, match=match) as raised:
            await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)
    assert "\n" not in str(raised.value) and len(fake.requests) == 1


async def test_alpaca_history_html_on_a_later_page_is_an_error_not_a_short_history() -> None:
    async with FakeAlpacaRest() as fake, _history(fake, page_limit=100) as history:
        fake.answer_next(200, HTML_BAD_GATEWAY, content_type="text/html", after=2)
        with pytest.raises(MalformedResponseError, match="502 Bad Gateway"):
            await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)
    assert len(fake.requests) == 3


async def test_alpaca_history_a_page_token_given_twice_is_an_error_not_a_loop() -> None:
    page = {"bars": {"AAPL": [GOOD_BAR]}, "next_page_token": "QUFQTHwxTWlufDIwMjQ="}
    async with FakeAlpacaRest() as fake, _history(fake) as history:
        fake.answer_next(200, page, count=2)
        with pytest.raises(MalformedResponseError, match="repeats its own page_token"):
            await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)
    assert len(fake.requests) == 2


async def test_alpaca_history_unreachable_is_transient() -> None:
    async with FakeAlpacaRest() as fake:
        history = _history(fake)  # its port is free again once the fake stops
    async with history:
        with pytest.raises(
            TransientError, match=r"cannot reach http://127\.0\.0\.1:\d+/v2/stocks/bars"
        ):
            await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)


# the parsers on Alpaca's documented examples, and the fake's own shapes


def test_parse_bars_reads_the_single_and_multi_symbol_shapes() -> None:
    single = b"""{"bars": [
        {"t": "2022-02-01T05:00:00Z", "o": 174, "h": 174.84, "l": 172.31, "c": 174.61,
         "v": 85998033, "n": 732412, "vw": 173.703516},
        {"t": "2022-02-02T05:00:00Z", "o": 174.64, "h": 175.88, "l": 173.33, "c": 175.84,
         "v": 84817432, "n": 675034, "vw": 174.941288}],
        "symbol": "AAPL", "next_page_token": "QUFQTHxEfDIwMjItMDItMDJUMDU6MDA6MDAuMDAwMDAwMDAwWg=="}"""
    multi = b"""{"bars": {"TSLA": [{"t": "2022-03-09T05:00:00Z", "o": 839, "h": 860.56,
        "l": 832.01, "c": 858.97, "v": 19227323, "n": 528531, "vw": 850.616587}]},
        "next_page_token": null}"""

    page = parse_bars(single, "AAPL")
    assert page.items.rows() == [
        (1_643_691_600 * S, 174.0, 174.84, 172.31, 174.61, 85_998_033.0),
        (1_643_778_000 * S, 174.64, 175.88, 173.33, 175.84, 84_817_432.0),
    ]
    assert page.next_page_token == "QUFQTHxEfDIwMjItMDItMDJUMDU6MDA6MDAuMDAwMDAwMDAwWg=="
    assert parse_bars(multi, "TSLA").items.rows() == [
        (1_646_802_000 * S, 839.0, 860.56, 832.01, 858.97, 19_227_323.0)
    ]
    assert len(parse_bars(multi, "AAPL").items) == 0  # no bars of it on this page
    empty = parse_bars(b'{"bars": null, "next_page_token": null, "symbol": "AAPL"}', "AAPL")
    assert len(empty.items) == 0 and empty.next_page_token is None
    assert empty.items.ts_us.dtype == np.int64 and empty.items.open.dtype == np.float64
    with pytest.raises(MalformedResponseError, match="for 'MSFT'"):
        parse_bars(single.replace(b'"AAPL"', b'"MSFT"'), "AAPL")


def test_parse_trades_reads_stock_and_crypto_trades() -> None:
    stock = b"""{"trades": [{"t": "2022-03-09T05:00:02.183Z", "x": "D", "p": 159.07, "s": 1,
        "c": ["@", "T", "I"], "i": 151, "z": "C"}, {"t": "2024-03-12T13:30:00.042486497Z",
        "x": "N", "p": 404.76, "s": 100, "c": ["@"], "i": 52983525029481, "z": "C"}],
        "symbol": "AAPL", "next_page_token": null}"""
    crypto = b"""{"trades": {"BTC/USD": [{"t": "2022-03-09T06:00:00.080264Z", "p": 41516.08,
        "s": 0.00315427, "tks": "B", "i": 293648598}, {"t": "2022-03-09T06:00:00.228546Z",
        "p": 41515.9, "s": 0.001, "tks": "S", "i": 293648599}]}, "next_page_token": "Qk"}"""

    page = parse_trades(stock, "AAPL", ts_recv_us=1_710_250_260 * S)
    assert page.items is not None and page.next_page_token is None
    assert page.items.ts_event_us.tolist() == [1_646_802_002_183_000, 1_710_250_200_042_486]
    assert page.items.trade_id == ("151", "52983525029481") and page.items.side is None
    assert page.items.ts_recv_us.tolist() == [1_710_250_260 * S] * 2
    coins = parse_trades(crypto, "BTC/USD", ts_recv_us=1_646_805_601 * S, source="alpaca").items
    assert coins is not None and coins.source == "alpaca"
    assert coins.size.tolist() == [0.00315427, 0.001]
    assert coins.side is not None and coins.side.tolist() == [Side.BUY, Side.SELL]
    assert parse_trades(b'{"trades": {}, "next_page_token": null}', "MSFT", 0).items is None


async def test_fake_single_symbol_endpoint_pages_like_the_multi_symbol_one() -> None:
    # Arrange
    headers = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY}
    query = {"timeframe": "1Min", "start": "2024-03-12T13:30:00Z", "end": "2024-03-12T19:59:00Z"}
    rows: list[tuple[Any, ...]] = []
    async with FakeAlpacaRest() as fake, aiohttp.ClientSession(headers=headers) as http:
        url = f"{fake.url}/v2/stocks/AAPL/bars"
        token = None

        # Act
        async with asyncio.timeout(10):
            while True:
                params = query | {"limit": "150"} | ({"page_token": token} if token else {})
                async with http.get(url, params=params) as response:
                    assert response.status == 200
                    assert response.headers["X-RateLimit-Limit"] == "200"
                    page = parse_bars(await response.read(), "AAPL")
                rows += page.items.rows()
                if (token := page.next_page_token) is None:
                    break
            async with http.get(url, params=query | {"page_token": "bm90IG91cnM="}) as response:
                refused = (response.status, await response.json())

    # Assert
    assert rows == _expected_bars("AAPL", "1Min", OPEN_S, CLOSE_S) and len(rows) == 390
    assert len(fake.requests) == 4
    assert refused == (422, {"code": 42210000, "message": "invalid page_token"})


def test_fake_refuses_to_start_where_only_real_data_flows() -> None:
    done = run_module(
        ["connectors.fakes.alpaca_rest", "--port", "0"], {"MS_REAL_DATA_ONLY": "true"}, 60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the fake Alpaca REST does not start" in done.stderr and "Traceback" not in done.stderr


async def test_fake_runs_as_a_module_with_the_keys_it_is_given() -> None:
    # Arrange
    env = {k: v for k, v in os.environ.items() if k != "MS_REAL_DATA_ONLY"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connectors.fakes.alpaca_rest", "--port", "0",
        cwd=ROOT,
        env=env | {"ALPACA_API_KEY": SECRET_ID, "ALPACA_SECRET_KEY": SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            line = (await process.stdout.readline()).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+) ", line)
        assert match and SECRET not in line, line
        config = AlpacaConfig(rest_url=match[1], key_id=SECRET_ID, secret_key=SECRET)

        # Act
        async with AlpacaHistory(config) as history:
            bars = await _bars(history, "AAPL", "1m", OPEN_S, CLOSE_S)

        # Assert
        assert bars.rows() == _expected_bars("AAPL", "1Min", OPEN_S, CLOSE_S)
    finally:
        process.terminate()
        async with asyncio.timeout(10):
            await process.wait()
