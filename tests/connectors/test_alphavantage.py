"""The Alpha Vantage connector against the fake Alpha Vantage on 127.0.0.1: the recorded series
arrive in UTC exactly, later polls carry only new and changed bars, rate-limit notes defer the
budget without losing data, error messages and pages are rejected while the stream goes on, a
refused key is fatal without showing it, and the budget never earns the fake's Note."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest
from conftest import BarRow, bar_rows, connector_stream, provider_bars, take
from pydantic import SecretStr, ValidationError

from connectors.alphavantage import AlphaVantageConfig, AlphaVantageConnector
from connectors.alphavantage_series import (
    ApiMessageError,
    KeyRefusedError,
    LimitNote,
    Series,
    limit_scope,
    limit_wait_s,
    parse_intraday,
)
from connectors.base import Rejected
from connectors.fakes.alphavantage import (
    API_KEY,
    DAILY_NOTE,
    MINUTE_NOTE,
    NOW_S,
    FakeAlphaVantage,
    forming,
    load_recording,
)
from shared.errors import FatalError, TransientError
from shared.models import ProviderBarBatch

ROOT = Path(__file__).resolve().parents[2]
RECORDED = load_recording()
ALL = ("AAPL", "MSFT", "SPY")
NEW_YORK = ZoneInfo("America/New_York")
SECRET = "AV-sk-live-9c2e7f41"
VALUES = ("1. open", "2. high", "3. low", "4. close", "5. volume")
BURST_NOTE = (
    "Thank you for using Alpha Vantage! Please consider spreading out your free API requests "
    "more sparingly (1 request per second). You may subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day),"
    " raise the per-second burst limit, and instantly unlock all premium endpoints"
)


def _fake(**overrides: Any) -> FakeAlphaVantage:
    """A fake whose own per-minute count stays out of the way (the budget tests set theirs)."""
    return FakeAlphaVantage(**({"minute_limit": 1000} | overrides))


def _connector(fake: FakeAlphaVantage, **overrides: Any) -> AlphaVantageConnector:
    settings: dict[str, Any] = {
        "base_url": fake.url,
        "symbols": ",".join(ALL),
        "api_key": API_KEY,
        "poll_s": 0.05,
        "minute_requests": 100,
        "day_requests": 1000,
    }
    return AlphaVantageConnector(AlphaVantageConfig(**(settings | overrides)))


def _utc_us(local: str) -> int:
    """A New York wall time as µs since the epoch."""
    when = datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(tzinfo=NEW_YORK)
    return int(when.timestamp()) * 1_000_000


def _points(
    symbol: str, now_s: int = NOW_S, *, regular_only: bool = False, last: int = 100
) -> list[BarRow]:
    """What a 1min compact answer holds at `now_s`, read here from the recording: the latest
    `last` points up to it, the one at `now_s` still forming, oldest first, in UTC."""
    rows: list[BarRow] = []
    for key, point in RECORDED[symbol]["Time Series (1min)"].items():
        ts_us = _utc_us(key)
        hhmm = key[11:16]
        if ts_us > now_s * 1_000_000 or (regular_only and not "09:30" <= hhmm < "16:00"):
            continue
        bar = tuple(float(point[k]) for k in VALUES)
        if ts_us == now_s * 1_000_000:
            bar = forming(bar)  # type: ignore[arg-type]
        rows.append((ts_us, *bar))  # type: ignore[arg-type]
    return sorted(rows)[-last:]


# polling


async def test_alphavantage_first_poll_yields_the_latest_100_points_in_utc_exactly() -> None:
    # Arrange
    async with _fake() as fake:
        connector = _connector(fake)
        before_us = time.time_ns() // 1000

        # Act
        async with connector_stream(connector) as stream:
            batches = [provider_bars(item) for item in await take(stream, 3)]
        after_us = time.time_ns() // 1000

    # Assert
    assert [b.instruments for b in batches] == [(s,) for s in ALL]
    assert [bar_rows(b) for b in batches] == [_points(s) for s in ALL]
    assert [len(b) for b in batches] == [100, 100, 100]
    aapl = batches[0].ts_us.tolist()
    assert aapl == sorted(aapl) and aapl[-1] == 1_749_564_000_000_000  # 10:00 EDT = 14:00 UTC
    assert 1_749_562_200_000_000 in aapl  # "2025-06-10 09:30:00" US/Eastern = 13:30 UTC
    for batch in batches:
        assert (batch.source, batch.provider, batch.interval) == ("alphavantage",) * 2 + ("1m",)
        assert batch.revision.tolist() == [0] * 100
        assert all(math.isnan(v) for v in batch.vwap.tolist())
        assert batch.trade_count.tolist() == [-1] * 100
        assert before_us <= batch.ts_recv_us <= after_us
    assert [r.query for r in fake.requests] == [
        {
            "function": "TIME_SERIES_INTRADAY",
            "symbol": s,
            "interval": "1min",
            "outputsize": "compact",
            "extended_hours": "true",
            "apikey": "***",
        }
        for s in ALL
    ]


async def test_alphavantage_second_poll_yields_only_the_new_bar_and_the_changed_one() -> None:
    # Arrange
    async with _fake() as fake:
        connector = _connector(fake, symbols="MSFT")
        async with connector_stream(connector) as stream:
            await take(stream, 1)

            # Act
            fake.advance()
            second = provider_bars((await take(stream, 1))[0])
            third = provider_bars((await take(stream, 1))[0])

    # Assert: 10:00 is final now (revision 1), 10:01 forms (revision 0)
    assert bar_rows(second) == _points("MSFT", NOW_S + 60)[-2:]
    assert second.revision.tolist() == [1, 0]
    assert second.ts_us.tolist() == [NOW_S * 1_000_000, (NOW_S + 60) * 1_000_000]
    assert len(third) == 0


async def test_alphavantage_without_extended_hours_gets_the_regular_session_only() -> None:
    async with _fake() as fake:
        connector = _connector(fake, symbols="SPY", extended_hours=False, interval="5m")
        async with connector_stream(connector) as stream:
            batch = provider_bars((await take(stream, 1))[0])
    minutes = _points("SPY", regular_only=True)
    assert len(minutes) == 30  # 09:30 to 10:00, but for 09:41, which had no trade
    starts = sorted({m[0] - m[0] % 300_000_000 for m in minutes})
    first = [m for m in minutes if m[0] < starts[1]]
    assert fake.requests[0].query["interval"] == "5min"
    assert batch.ts_us.tolist() == starts and len(starts) == 7  # 09:30, 09:35 ... 10:00
    assert bar_rows(batch)[0] == (
        first[0][0],
        first[0][1],
        max(r[2] for r in first),
        min(r[3] for r in first),
        first[-1][4],
        sum(r[5] for r in first),
    )


async def test_alphavantage_minute_note_defers_to_the_next_minute_and_loses_nothing() -> None:
    # Arrange: a "minute" of 0.5 s on both sides
    async with _fake(minute_window_s=0.5) as fake:
        connector = _connector(fake, symbols="AAPL", minute_window_s=0.5)
        async with connector_stream(connector) as stream:
            await take(stream, 1)
            fake.advance()
            fake.rate_limit_note(times=2)

            # Act
            (item,) = await take(stream, 1)

    # Assert: the same symbol asked again after each note, in a later window; no data lost
    assert bar_rows(provider_bars(item)) == _points("AAPL", NOW_S + 60)[-2:]
    assert provider_bars(item).revision.tolist() == [1, 0]
    assert [r.query["symbol"] for r in fake.requests] == ["AAPL"] * 4
    windows = [math.floor(r.wall_s / 0.5) for r in fake.requests[1:]]
    assert windows[0] < windows[1] < windows[2]
    assert (connector.counts["limit_notes"], connector.counts["limit_notes_minute"]) == (2, 2)
    assert connector.counts["rejected"] == 0 and fake.notes_sent["minute"] == 2


async def test_alphavantage_daily_note_defers_to_the_next_utc_day() -> None:
    # Arrange: a "day" of 1 s, counted from the epoch as UTC days are
    async with _fake() as fake:
        connector = _connector(fake, symbols="AAPL", day_window_s=1.0)
        fake.rate_limit_note(daily=True)

        # Act
        async with connector_stream(connector) as stream:
            (item,) = await take(stream, 1)

    # Assert
    assert bar_rows(provider_bars(item)) == _points("AAPL")
    note, retry = fake.requests
    assert math.floor(retry.wall_s) > math.floor(note.wall_s)
    assert (connector.counts["limit_notes_day"], connector.counts["rejected"]) == (1, 0)


async def test_alphavantage_error_message_is_rejected_for_that_symbol_and_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Arrange
    caplog.set_level(logging.WARNING, logger="connectors.alphavantage")
    async with _fake() as fake:
        connector = _connector(fake, symbols="AAPL,NOPE,MSFT")

        # Act: two rounds
        async with connector_stream(connector) as stream:
            items = await take(stream, 6)

    # Assert
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["ProviderBarBatch", "Rejected", "ProviderBarBatch"] * 2
    rejected = items[1]
    assert isinstance(rejected, Rejected) and rejected.reason == "provider_error"
    assert rejected.detail.startswith("NOPE: Error Message: Invalid API call.")
    assert "Error Message" in orjson.loads(rejected.payload)
    assert bar_rows(provider_bars(items[2])) == _points("MSFT")
    assert sum("NOPE" in r.getMessage() for r in caplog.records) == 1


async def test_alphavantage_html_page_is_rejected_and_the_stream_goes_on() -> None:
    # Arrange
    async with _fake() as fake:
        fake.serve_html(times=1)
        connector = _connector(fake, symbols="AAPL,MSFT")

        # Act
        async with connector_stream(connector) as stream:
            page, msft, aapl = await take(stream, 3)
        fake.serve_html(times=1, status=502)
        with pytest.raises(TransientError, match="HTTP 502"):
            async with connector_stream(connector) as stream:
                await take(stream, 1)

    # Assert
    assert isinstance(page, Rejected) and page.reason == "undecodable"
    assert page.payload.startswith(b"<!DOCTYPE html>")
    assert bar_rows(provider_bars(msft)) == _points("MSFT")
    assert bar_rows(provider_bars(aapl)) == _points("AAPL")  # the next round: nothing lost


async def test_alphavantage_refused_key_is_fatal_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Arrange
    caplog.set_level(logging.DEBUG)
    async with _fake() as fake:
        connector = _connector(fake, api_key=SECRET)

        # Act
        with pytest.raises(FatalError) as raised:
            async with connector_stream(connector) as stream:
                await take(stream, 1)
        revoked = _connector(fake)
        async with connector_stream(revoked) as stream:
            await take(stream, 1)
            fake.revoke_keys()
            with pytest.raises(FatalError, match="refused the API key"):
                await take(stream, 3)

    # Assert
    message = str(raised.value)
    assert "apikey is invalid or missing" in message and "ALPHA_VANTAGE_API_KEY" in message
    assert "apikey=***" in message and "\n" not in message
    chain = [raised.value, raised.value.__cause__, raised.value.__context__]
    assert all(SECRET not in str(e) for e in chain)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "apikey=***" in logged and SECRET not in logged


async def test_alphavantage_unreachable_is_transient_without_the_key() -> None:
    async with _fake() as fake:
        connector = _connector(fake, api_key=SECRET)
    with pytest.raises(TransientError, match="cannot reach Alpha Vantage") as raised:
        async with connector_stream(connector) as stream:
            await take(stream, 1)
    assert "apikey=***" in str(raised.value) and SECRET not in str(raised.value)


async def test_alphavantage_budget_polls_three_symbols_without_ever_earning_the_note() -> None:
    # Arrange: the fake answers the Note past 5 requests in 0.5 s, as it does to a bare burst
    async with FakeAlphaVantage(minute_window_s=0.5) as fake:
        async with aiohttp.ClientSession() as session:
            for _ in range(6):
                async with session.get(fake.url, params=_query("AAPL")) as response:
                    burst = orjson.loads(await response.read())
    assert burst == MINUTE_NOTE and fake.notes_sent["minute"] == 1
    async with FakeAlphaVantage(minute_window_s=0.5) as fake:
        connector = _connector(
            fake, poll_s=0.01, minute_requests=5, minute_window_s=0.5, day_requests=25
        )

        # Act: five rounds of three symbols, as fast as the budget lets them go
        async with connector_stream(connector) as stream:
            items = await take(stream, 15, timeout_s=8)

    # Assert
    assert all(isinstance(item, ProviderBarBatch) for item in items)
    assert [len(provider_bars(item)) for item in items[:3]] == [100, 100, 100]
    assert fake.notes_sent == {} and connector.counts["limit_notes"] == 0
    times = [r.at_s for r in fake.requests]
    assert len(times) == 15
    assert all(b - a >= 0.5 for a, b in zip(times, times[5:], strict=False))


def _query(symbol: str) -> dict[str, str]:
    return {
        "function": "TIME_SERIES_INTRADAY",
        "symbol": symbol,
        "interval": "1min",
        "apikey": API_KEY,
    }


async def test_alphavantage_fake_runs_as_a_module_with_the_key_it_is_given() -> None:
    # Arrange: the key in the environment of both sides, as `make up` would hand it out
    env = {k: v for k, v in os.environ.items() if k != "MS_ALPHAVANTAGE_API_KEY"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "connectors.fakes.alphavantage", "--port", "0", "--minute-s", "0"),
        cwd=ROOT,
        env=env | {"ALPHA_VANTAGE_API_KEY": SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+/query)\?apikey=\*\*\*", line)
        assert match and SECRET not in line, line
        config = AlphaVantageConfig(base_url=match[1], symbols="SPY", api_key=SecretStr(SECRET))

        # Act
        async with connector_stream(AlphaVantageConnector(config)) as stream:
            batch = provider_bars((await take(stream, 1))[0])

        # Assert
        assert bar_rows(batch) == _points("SPY")
    finally:
        process.terminate()
        async with asyncio.timeout(4):
            await process.wait()


# parsing


def _series(points: dict[str, Any], zone: str = "US/Eastern") -> bytes:
    meta = {"2. Symbol": "AAPL", "4. Interval": "1min", "6. Time Zone": zone}
    return orjson.dumps({"Meta Data": meta, "Time Series (1min)": points})


def _av(o: str, h: str, low: str, c: str, v: str) -> dict[str, str]:
    return dict(zip(VALUES, (o, h, low, c, v), strict=True))


def test_alphavantage_parse_intraday_converts_eastern_times_across_dst() -> None:
    point = _av("200.5800", "200.5900", "200.4300", "200.4600", "1542684")
    summer = parse_intraday(_series({"2025-06-10 09:30:00": point}), "AAPL", "1m")
    winter = parse_intraday(_series({"2025-01-15 09:30:00": point}), "AAPL", "1m")
    assert isinstance(summer, Series) and isinstance(winter, Series)
    assert summer.bars.rows() == [
        (1_749_562_200_000_000, 200.58, 200.59, 200.43, 200.46, 1542684.0)
    ]
    assert winter.bars.ts_us.tolist() == [1_736_951_400_000_000]  # 14:30 UTC in January


def test_alphavantage_parse_intraday_rejects_bad_points_alone() -> None:
    good = _av("200.5800", "200.5900", "200.4300", "200.4600", "1542684")
    answer = _series(
        {
            "2025-06-10 09:32:00": _av("200.4", "n/a", "200.1", "200.2", "10"),
            "2025-06-10 09:31:00": good,
            "10 June, 09:30": good,
        }
    )
    series = parse_intraday(answer, "AAPL", "1m")
    assert isinstance(series, Series)
    assert series.bars.ts_us.tolist() == [1_749_562_260_000_000]
    assert [r.reason for r in series.rejected] == ["malformed_bar", "malformed_bar"]
    assert "2. high 'n/a'" in series.rejected[0].detail


def test_alphavantage_notes_keys_and_messages_are_told_apart() -> None:
    def parse(body: dict[str, str]) -> Series | LimitNote:
        return parse_intraday(orjson.dumps(body), "AAPL", "1m")

    assert parse(MINUTE_NOTE) == LimitNote(MINUTE_NOTE["Note"], "minute")
    assert parse(DAILY_NOTE) == LimitNote(DAILY_NOTE["Information"], "day")
    assert parse({"Information": BURST_NOTE}) == LimitNote(BURST_NOTE, "second")
    demo = "The **demo** API key is for demo purposes only. Please claim your free API key at (https://www.alphavantage.co/support/#api-key)"
    with pytest.raises(KeyRefusedError):
        parse({"Information": demo})
    premium = "Thank you for using Alpha Vantage! This is a premium endpoint."
    with pytest.raises(ApiMessageError) as raised:
        parse({"Information": premium})
    assert raised.value.kind == "Information"


def test_alphavantage_limit_waits_end_at_the_next_second_minute_or_utc_midnight() -> None:
    now_s = 1_749_564_030.25  # 2025-06-10 14:00:30.25 UTC
    assert limit_wait_s("second", now_s) == pytest.approx(0.75)
    assert limit_wait_s("minute", now_s) == pytest.approx(29.75)
    assert limit_wait_s("day", now_s) == pytest.approx(1_749_600_000 - now_s)
    assert limit_scope("Our standard API call frequency is 5 calls per minute") == "minute"


# settings


def test_alphavantage_config_takes_the_operators_key_name_and_hides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MS_ALPHAVANTAGE_API_KEY", raising=False)
    monkeypatch.setenv("ALPHA_VANTAGE_API_KEY", SECRET)
    config = AlphaVantageConfig()
    assert config.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in AlphaVantageConnector(config).shown_url("AAPL")
    monkeypatch.setenv("MS_ALPHAVANTAGE_API_KEY", "ours-wins")
    assert AlphaVantageConfig().api_key.get_secret_value() == "ours-wins"
    budget = AlphaVantageConnector(config).budget
    assert [(limit.count, limit.window_s) for limit in budget.limits] == [(5, 60.0), (25, 86_400.0)]


def test_alphavantage_config_without_a_key_names_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MS_ALPHAVANTAGE_API_KEY", raising=False)
    monkeypatch.delenv("ALPHA_VANTAGE_API_KEY", raising=False)
    with pytest.raises(ValidationError) as raised:
        AlphaVantageConfig()
    (error,) = raised.value.errors()
    assert error["loc"] == ("api_key",)
    assert "ALPHA_VANTAGE_API_KEY" in error["msg"] and "MS_ALPHAVANTAGE_API_KEY" in error["msg"]
    with pytest.raises(ValidationError, match="leave the key out"):
        AlphaVantageConfig(
            base_url="https://www.alphavantage.co/query?apikey=x", api_key=SecretStr("k")
        )
