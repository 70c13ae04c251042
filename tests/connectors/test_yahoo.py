"""The Yahoo connector against the fake Yahoo chart API on 127.0.0.1: the recorded bars arrive
exactly, later polls carry only new and changed bars, nulls and unasked pre/post-market bars
stay out, a 429 defers the budget without losing a bar, and bad answers are rejected while the
stream goes on."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from conftest import BarRow, bar_rows, connector_stream, provider_bars, take
from pydantic import ValidationError

from connectors.base import Rejected
from connectors.fakes.yahoo import NOW_S, FakeYahoo, forming, load_recording
from connectors.polled_bars import BarRevisions, Bars
from connectors.yahoo import RateLimitedError, YahooConfig, YahooConnector
from connectors.yahoo_chart import ChartError, MalformedChartError, parse_chart
from shared.errors import TransientError

ROOT = Path(__file__).resolve().parents[2]
RECORDED = load_recording()
ALL = ("AAPL", "MSFT", "SPY")
OPEN_S = 1_749_562_200  # 2025-06-10 09:30 New York (13:30 UTC), the regular open
CLOSE_S = 1_749_585_600  # 16:00 New York
DAY_US = 1_749_513_600_000_000  # 2025-06-10 00:00 UTC
COLUMNS = ("open", "high", "low", "close", "volume")


def _connector(fake: FakeYahoo, **overrides: Any) -> YahooConnector:
    settings: dict[str, Any] = {"base_url": fake.url, "symbols": ",".join(ALL), "poll_s": 0.05}
    settings |= overrides
    return YahooConnector(YahooConfig(**settings))


def _f32(price: float) -> float:
    return float(np.float32(price))


def _minutes(symbol: str, now_s: int = NOW_S, regular_only: bool = False) -> list[BarRow]:
    """What Yahoo's 1m chart holds at `now_s`, read here from the recording: every minute up
    to it without the null ones, the one at `now_s` still forming."""
    result = RECORDED[symbol]["chart"]["result"][0]
    quote = result["indicators"]["quote"][0]
    rows: list[BarRow] = []
    for i, ts in enumerate(result["timestamp"]):
        values = [quote[c][i] for c in COLUMNS]
        if ts > now_s or None in values or (regular_only and not OPEN_S <= ts < CLOSE_S):
            continue
        if ts == now_s:
            *prices, volume = forming(tuple(values))
            values = [*(_f32(p) for p in prices), volume]
        rows.append((ts * 1_000_000, *(float(v) for v in values)))
    return rows


# polling


async def test_yahoo_first_poll_yields_every_recorded_bar_up_to_now_without_the_nulls() -> None:
    # Arrange
    async with FakeYahoo() as fake:
        connector = _connector(fake)
        before_us = time.time_ns() // 1000

        # Act
        async with connector_stream(connector) as stream:
            batches = [provider_bars(item) for item in await take(stream, 3)]
        after_us = time.time_ns() // 1000

    # Assert
    assert [b.instruments for b in batches] == [(s,) for s in ALL]
    assert [bar_rows(b) for b in batches] == [_minutes(s) for s in ALL]
    assert [len(b) for b in batches] == [194, 153, 220]  # 04:00 to 10:00, pre-market included
    nulls_us = {
        ts * 1_000_000
        for ts, o in zip(
            RECORDED["AAPL"]["chart"]["result"][0]["timestamp"],
            RECORDED["AAPL"]["chart"]["result"][0]["indicators"]["quote"][0]["open"],
            strict=True,
        )
        if o is None and ts <= NOW_S
    }
    assert len(nulls_us) == 2 and not nulls_us & set(batches[0].ts_us.tolist())
    assert connector.counts["nulls_skipped"] == 6
    for batch in batches:
        assert (batch.source, batch.provider, batch.interval) == ("yahoo", "yahoo", "1m")
        assert batch.revision.tolist() == [0] * len(batch)
        assert batch.instrument_index.tolist() == [0] * len(batch)
        assert all(math.isnan(v) for v in batch.vwap.tolist())
        assert batch.trade_count.tolist() == [-1] * len(batch)
        assert before_us <= batch.ts_recv_us <= after_us
        assert int(batch.ts_us[-1]) == NOW_S * 1_000_000  # the forming minute
    assert [(r.symbol, r.query) for r in fake.requests] == [
        (s, {"interval": "1m", "range": "1d", "includePrePost": "true"}) for s in ALL
    ]


async def test_yahoo_second_poll_yields_only_the_new_bar_and_the_changed_one() -> None:
    # Arrange
    async with FakeYahoo() as fake:
        connector = _connector(fake, symbols="AAPL")
        async with connector_stream(connector) as stream:
            await take(stream, 1)

            # Act
            fake.advance()
            second = provider_bars((await take(stream, 1))[0])
            third = provider_bars((await take(stream, 1))[0])

    # Assert: 10:00 is final now (revision 1), 10:01 forms (revision 0)
    later = _minutes("AAPL", NOW_S + 60)
    assert bar_rows(second) == later[-2:]
    assert second.revision.tolist() == [1, 0]
    assert second.ts_us.tolist() == [NOW_S * 1_000_000, (NOW_S + 60) * 1_000_000]
    assert bar_rows(second)[0] != _minutes("AAPL")[-1]  # the forming values were replaced
    assert len(third) == 0  # nothing new, nothing changed: an empty batch, no repeat


async def test_yahoo_without_pre_post_gets_the_regular_session_even_when_yahoo_leaks() -> None:
    # Arrange
    async with FakeYahoo() as fake:
        connector = _connector(fake, include_pre_post=False)

        # Act
        async with connector_stream(connector) as stream:
            asked = [provider_bars(item) for item in await take(stream, 3)]
        fake.leak_pre_post()
        leaky = _connector(fake, include_pre_post=False)
        async with connector_stream(leaky) as stream:
            leaked = [provider_bars(item) for item in await take(stream, 3)]

    # Assert
    regular = [_minutes(s, regular_only=True) for s in ALL]
    assert [len(r) for r in regular] == [30, 30, 30]  # 09:30 to 10:00 without a null each
    assert [bar_rows(b) for b in asked] == regular
    assert [bar_rows(b) for b in leaked] == regular
    assert connector.counts["outside_regular"] == 0
    assert leaky.counts["outside_regular"] == (194 - 30) + (153 - 30) + (220 - 30)
    assert {r.query["includePrePost"] for r in fake.requests} == {"false"}


async def test_yahoo_429_defers_every_request_then_no_bar_is_lost() -> None:
    # Arrange
    async with FakeYahoo() as fake:
        connector = _connector(fake, symbols="AAPL", rate_limit_wait_s=0.3)
        async with connector_stream(connector) as stream:
            await take(stream, 1)
        fake.advance()
        fake.rate_limit(retry_after_s=0.5, times=1)

        # Act
        with pytest.raises(RateLimitedError, match="HTTP 429") as raised:
            async with connector_stream(connector) as stream:
                await take(stream, 1)
        async with connector_stream(connector) as stream:  # the runner reconnects
            after = provider_bars((await take(stream, 1))[0])
        fake.advance()
        fake.rate_limit(times=1)  # no Retry-After: rate_limit_wait_s
        with pytest.raises(TransientError, match="HTTP 429"):
            async with connector_stream(connector) as stream:
                await take(stream, 1)
        async with connector_stream(connector) as stream:
            last = provider_bars((await take(stream, 1))[0])

    # Assert
    assert raised.value.retry_after_s == 0.5
    times = [r.at_s for r in fake.requests]
    assert times[2] - times[1] >= 0.5 and times[4] - times[3] >= 0.3
    assert bar_rows(after) == _minutes("AAPL", NOW_S + 60)[-2:]
    assert after.revision.tolist() == [1, 0]
    assert bar_rows(last) == _minutes("AAPL", NOW_S + 120)[-2:]
    assert connector.counts["rate_limited"] == 2


async def test_yahoo_unknown_symbol_is_rejected_every_poll_logged_once_and_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Arrange
    caplog.set_level(logging.WARNING, logger="connectors.yahoo")
    async with FakeYahoo() as fake:
        connector = _connector(fake, symbols="AAPL,NOPE,MSFT")

        # Act: two rounds
        async with connector_stream(connector) as stream:
            items = await take(stream, 6)

    # Assert
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["ProviderBarBatch", "Rejected", "ProviderBarBatch"] * 2
    rejected = [item for item in items if isinstance(item, Rejected)]
    assert {r.reason for r in rejected} == {"unknown_symbol"}
    assert rejected[0].detail == (
        "NOPE: HTTP 404: Not Found: No data found, symbol may be delisted"
    )
    assert orjson.loads(rejected[0].payload)["chart"]["error"]["code"] == "Not Found"
    assert bar_rows(provider_bars(items[2])) == _minutes("MSFT")
    assert [len(provider_bars(items[i])) for i in (3, 5)] == [0, 0]
    assert sum("NOPE" in r.getMessage() for r in caplog.records) == 1
    assert connector.counts["rejected"] == 2


async def test_yahoo_other_chart_errors_and_pages_are_rejected_and_the_stream_goes_on() -> None:
    # Arrange
    async with FakeYahoo() as fake:
        fake.fail("MSFT", "Bad Request", "Invalid input - symbol", status=400)
        fake.serve_html(times=1)
        connector = _connector(fake, symbols="AAPL,MSFT,SPY")

        # Act
        async with connector_stream(connector) as stream:
            items = await take(stream, 4)
        fake.serve_html(times=1, status=503)
        with pytest.raises(TransientError, match="HTTP 503"):
            async with connector_stream(connector) as stream:
                await take(stream, 1)

    # Assert
    page, bad, spy, aapl = items
    assert isinstance(page, Rejected) and page.reason == "undecodable"
    assert page.payload.startswith(b"<!DOCTYPE html>") and page.detail.startswith("AAPL: HTTP 200")
    assert isinstance(bad, Rejected) and bad.reason == "provider_error"
    assert "Bad Request: Invalid input - symbol" in bad.detail
    assert bar_rows(provider_bars(spy)) == _minutes("SPY")
    assert bar_rows(provider_bars(aapl)) == _minutes("AAPL")  # the next round: nothing lost


async def test_yahoo_intervals_are_asked_by_yahoos_names_and_stamped_by_ours() -> None:
    # Arrange: the regular session from 09:30 to 10:00 (forming), folded by hand
    session = _minutes("SPY", regular_only=True)
    folded = (
        session[0][1],
        max(r[2] for r in session),
        min(r[3] for r in session),
        session[-1][4],
        sum(r[5] for r in session),
    )
    async with FakeYahoo() as fake:
        hourly = _connector(fake, symbols="SPY", interval="1h", include_pre_post=False)
        daily = _connector(fake, symbols="SPY", interval="1d", range="5d")

        # Act
        async with connector_stream(hourly) as stream:
            hour = provider_bars((await take(stream, 1))[0])
        async with connector_stream(daily) as stream:
            day = provider_bars((await take(stream, 1))[0])

    # Assert
    assert [r.query["interval"] for r in fake.requests] == ["60m", "1d"]
    assert (hour.interval, day.interval) == ("1h", "1d")
    assert bar_rows(hour) == [(OPEN_S * 1_000_000, *folded)]  # Yahoo's hours start at 09:30
    assert bar_rows(day) == [(DAY_US, *folded)]  # a day at its UTC midnight


async def test_yahoo_unreachable_is_transient() -> None:
    async with FakeYahoo() as fake:
        connector = _connector(fake)
    with pytest.raises(TransientError, match="cannot reach Yahoo"):
        async with connector_stream(connector) as stream:
            await take(stream, 1)


async def test_yahoo_fake_runs_as_a_module_on_any_free_port() -> None:
    # Arrange
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "connectors.fakes.yahoo", "--port", "0", "--minute-s", "0"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/v8/finance/chart/", line)
        assert match, line
        connector = YahooConnector(YahooConfig(base_url=match[1], symbols="MSFT"))

        # Act
        async with connector_stream(connector) as stream:
            batch = provider_bars((await take(stream, 1))[0])

        # Assert
        assert bar_rows(batch) == _minutes("MSFT")
    finally:
        process.terminate()
        async with asyncio.timeout(4):
            await process.wait()


# parsing


def _chart(timestamps: list[int], rows: list[list[Any]], **meta: Any) -> bytes:
    quote = {c: [row[i] for row in rows] for i, c in enumerate(COLUMNS)}
    meta = {"exchangeTimezoneName": "America/New_York", "gmtoffset": -14400} | meta
    result = {"meta": meta, "timestamp": timestamps, "indicators": {"quote": [quote]}}
    return orjson.dumps({"chart": {"result": [result], "error": None}})


def test_yahoo_parse_chart_merges_a_live_row_into_its_bar_and_grids_one_past_it() -> None:
    t = OPEN_S + 3600  # 10:30 New York
    first, second = [200.5, 200.9, 200.4, 200.8, 81_200], [200.8, 201.0, 200.7, 200.75, 64_000]
    live = [200.76, 201.2, 200.6, 201.1, 1_500]
    merged = parse_chart(
        _chart([t, t + 300, t + 437], [first, second, live]), "AAPL", "5m", include_pre_post=True
    )
    gridded = parse_chart(_chart([t, t + 150], [first, live]), "AAPL", "1m", include_pre_post=True)
    assert merged.bars.rows() == [
        (t * 1_000_000, *map(float, first)),
        ((t + 300) * 1_000_000, 200.8, 201.2, 200.6, 201.1, 65_500.0),
    ]
    assert gridded.bars.ts_us.tolist() == [t * 1_000_000, (t + 120) * 1_000_000]


def test_yahoo_parse_chart_stamps_days_at_utc_midnight_and_keeps_the_live_day_row() -> None:
    day1, day2 = OPEN_S - 86_400, OPEN_S
    rows = [[199.0, 202.0, 198.5, 201.45, 5e7], [200.6, 203.0, 200.2, 202.1, 3e7]]
    live = [200.6, 203.4, 200.2, 202.4, 3.1e7]
    chart = parse_chart(
        _chart([day1, day2, day2 + 20_000], [*rows, live]), "AAPL", "1d", include_pre_post=False
    )
    assert chart.bars.rows() == [
        (DAY_US - 86_400_000_000, *map(float, rows[0])),
        (DAY_US, *map(float, live)),
    ]


def test_yahoo_parse_chart_rejects_bad_rows_alone_and_refuses_bad_shapes() -> None:
    good = [200.5, 200.9, 200.4, 200.8, 81_200]
    chart = parse_chart(
        _chart(
            [OPEN_S, OPEN_S + 60, OPEN_S + 120, OPEN_S + 180],
            [good, ["200.5", 201, 200, 200.5, 1], [None] * 5, [200.5, 201, 200, 200.5, -1]],
        ),
        "AAPL",
        "1m",
        include_pre_post=True,
    )
    assert chart.bars.rows() == [(OPEN_S * 1_000_000, *map(float, good))]
    assert [r.reason for r in chart.rejected] == ["bad_price", "bad_size"]
    assert orjson.loads(chart.rejected[0].payload)["open"] == "200.5"
    assert chart.nulls == 1
    empty = b'{"chart":{"result":[{"meta":{"symbol":"AAPL"},"indicators":{"quote":[{}]}}],"error":null}}'
    assert len(parse_chart(empty, "AAPL", "1m", include_pre_post=True).bars) == 0
    with pytest.raises(MalformedChartError, match="as long as timestamp") as short:
        parse_chart(_chart([OPEN_S, OPEN_S + 60], [good]), "AAPL", "1m", include_pre_post=True)
    with pytest.raises(MalformedChartError) as html:
        parse_chart(b"<html>Will be right back</html>", "AAPL", "1m", include_pre_post=True)
    assert (short.value.reason, html.value.reason) == ("malformed_response", "undecodable")
    error = b'{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found"}}}'
    with pytest.raises(ChartError) as raised:
        parse_chart(error, "NOPE", "1m", include_pre_post=True)
    assert (raised.value.code, raised.value.description) == ("Not Found", "No data found")


def test_bar_revisions_count_each_change_and_forget_bars_that_left_the_window() -> None:
    revisions = BarRevisions()
    t = OPEN_S * 1_000_000
    first = Bars.from_rows([(t, 200.5, 200.9, 200.4, 200.8, 81_200.0)])
    moved = Bars.from_rows([(t, 200.5, 201.0, 200.4, 200.9, 90_000.0)])
    later = Bars.from_rows([(t + 60_000_000, 200.9, 201.0, 200.8, 200.85, 40_000.0)])
    assert [a.tolist() for a in revisions.update("AAPL", first)] == [[0], [0]]
    assert [a.tolist() for a in revisions.update("AAPL", first)] == [[], []]
    assert [a.tolist() for a in revisions.update("AAPL", moved)] == [[0], [1]]
    assert [a.tolist() for a in revisions.update("AAPL", first)] == [[0], [2]]
    assert [a.tolist() for a in revisions.update("MSFT", first)] == [[0], [0]]
    revisions.update("AAPL", later)
    assert revisions.published("AAPL") == 1


# settings


def test_yahoo_config_cleans_symbols_and_refuses_unknown_settings() -> None:
    config = YahooConfig(symbols=" AAPL, ,^GSPC,AAPL,BRK-B")
    connector = YahooConnector(config)
    assert connector.symbols == ("AAPL", "^GSPC", "BRK-B")
    assert connector.chart_url("^GSPC").endswith("/v8/finance/chart/%5EGSPC")
    with pytest.raises(ValidationError, match="whitespace"):
        YahooConfig(symbols="AA PL")
    with pytest.raises(ValidationError):
        YahooConfig.model_validate({"interval": "60m"})  # ours is 1h
    with pytest.raises(ValidationError):
        YahooConfig.model_validate({"poll_seconds": 5})


def test_yahoo_config_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS_YAHOO_INTERVAL", "5m")
    monkeypatch.setenv("MS_YAHOO_INCLUDE_PRE_POST", "false")
    monkeypatch.setenv("MS_YAHOO_BUDGET_REQUESTS", "30")
    config = YahooConfig()
    assert (config.interval, config.include_pre_post, config.budget_requests) == ("5m", False, 30)
    limit = YahooConnector(config).budget.limits[0]
    assert (limit.count, limit.window_s) == (30, 60.0)
