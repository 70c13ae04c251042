"""The FMP connector against the fake FMP on 127.0.0.1 and a real PostgreSQL: recorded statements
arrive exactly, a refresh fills the rate budget without a 429, a stopped refresh resumes with
only the remaining requests, a refused key is fatal without showing it, bad bodies are rejected
and the refresh goes on; and the parsers, on their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from connectors.base import Rejected
from connectors.fakes.fmp import API_KEY, DATA, HTML_PAGE, FakeFmp
from connectors.fmp import FmpConfig, FmpConnector
from connectors.fmp_statements import (
    ENDPOINTS,
    STATEMENTS,
    Item,
    Unit,
    edgar_time_us,
    parse_prices,
    parse_statements,
)
from connectors.retry_after import retry_after_s
from shared.errors import FatalError, TransientError
from shared.models import FundamentalStatement, ProviderBarBatch

SECRET = "fmp-live-5c1d9e7a3b"
RECORDED = ("AAPL", "MSFT")


def _connector(fake: FakeFmp, database_url: str, **overrides: Any) -> FmpConnector:
    settings = {
        "base_url": fake.base_url,
        "api_key": API_KEY,
        "symbols": ",".join(RECORDED),
        "run_id": f"test-{uuid.uuid4().hex[:12]}",
        "database_url": database_url,
    } | overrides
    return FmpConnector(FmpConfig(**settings))


@contextlib.asynccontextmanager
async def _streaming(connector: FmpConnector) -> AsyncIterator[AsyncIterator[Item]]:
    """The connector's stream, closed (its HTTP session and database connection with it)."""
    stream = connector.stream()
    try:
        yield stream
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def _refresh(connector: FmpConnector, timeout_s: float = 10) -> list[Item]:
    """Every item of a whole refresh, each acknowledged as Kafka would; fail after `timeout_s`."""
    items = []
    async with asyncio.timeout(timeout_s), _streaming(connector) as stream:
        async for item in stream:
            items.append(item)
            if not isinstance(item, Rejected):
                connector.delivered(item)
    return items


def _statements(items: list[Item]) -> list[FundamentalStatement]:
    return [item for item in items if isinstance(item, FundamentalStatement)]


def _recorded(symbol: str, today: str) -> list[tuple[str, str, str, str, bytes]]:
    """The fake's recording of `symbol` as (symbol, statement, period, fiscal_date, body), in
    the order a refresh asks for it."""
    rows = []
    for statement in STATEMENTS:
        periods = ("snapshot",) if statement == "profile" else ("annual", "quarter")
        for period in periods:
            suffix = "" if statement == "profile" else f".{period}"
            path = DATA / f"{symbol}.{ENDPOINTS[statement]}{suffix}.json"
            for entry in orjson.loads(path.read_bytes()):
                fiscal = today if statement == "profile" else entry["date"]
                rows.append((symbol, statement, period, fiscal, orjson.dumps(entry)))
    return rows


def _done_units(database_url: str, run_id: str) -> set[tuple[str, str, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select symbol, statement, period from fundamentals_refresh where run_id = %s",
            (run_id,),
        ).fetchall()
    return {(s, st, p) for s, st, p in rows}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# a whole refresh


async def test_fmp_recorded_aapl_msft_arrive_as_one_statement_per_period_exactly(
    database_url: str,
) -> None:
    # Arrange
    async with FakeFmp() as fake:
        connector = _connector(fake, database_url)
        before_us = time.time_ns() // 1000

        # Act
        items = await _refresh(connector)
        after_us = time.time_ns() // 1000

    # Assert: 2 x (1 profile + 5 statements x (5 years + 6 quarters)) = 112, in request order
    today = datetime.fromtimestamp(before_us / 1e6, UTC).date().isoformat()
    statements = _statements(items)
    assert len(items) == len(statements) == 112
    got = [(s.symbol, s.statement, s.period, s.fiscal_date, s.body) for s in statements]
    assert got == _recorded("AAPL", today) + _recorded("MSFT", today)
    assert {s.provider for s in statements} == {"fmp"}
    for s in statements:
        assert before_us <= s.ts_recv_us <= after_us
        if s.statement in ("income_statement", "balance_sheet", "cash_flow"):
            assert s.ts_event_us == edgar_time_us(orjson.loads(s.body)["acceptedDate"])
        else:  # ratios, key metrics and profiles say nothing of when: the receive time
            assert s.ts_event_us == s.ts_recv_us
    by_key = {(s.symbol, s.statement, s.period, s.fiscal_date): s for s in statements}
    aapl_fy24 = by_key[("AAPL", "income_statement", "annual", "2024-09-28")]
    msft_q2 = by_key[("MSFT", "cash_flow", "quarter", "2023-12-31")]
    # accepted 2024-11-01 06:01:36 EDT and 2024-01-30 16:08:03 EST
    assert (
        aapl_fy24.ts_event_us
        == int(datetime(2024, 11, 1, 10, 1, 36, tzinfo=UTC).timestamp()) * 10**6
    )
    assert (
        msft_q2.ts_event_us == int(datetime(2024, 1, 30, 21, 8, 3, tzinfo=UTC).timestamp()) * 10**6
    )
    assert orjson.loads(aapl_fy24.body)["netIncome"] == 93_736_000_000
    assert len(fake.requests) == 22 and {r.status for r in fake.requests} == {200}
    assert len(_done_units(database_url, connector.cfg.run_id)) == 22
    stats = connector.provider_stats()["fmp"]
    assert (stats["state"], stats["done"], stats["total"], stats["records"]) == (
        "finished", 22, 22, 112,
    )  # fmt: skip


async def test_fmp_daily_prices_arrive_as_one_batch_of_1d_bars_oldest_first(
    database_url: str,
) -> None:
    # Arrange
    async with FakeFmp() as fake:
        connector = _connector(
            fake, database_url, symbols="AAPL", statements="profile", prices=True, price_days=30
        )

        # Act
        items = await _refresh(connector)
        rows = fake.body("historical-price-full", "AAPL", limit=30)["historical"][::-1]

    # Assert
    (batch,) = [item for item in items if isinstance(item, ProviderBarBatch)]
    assert (batch.source, batch.provider, batch.interval, batch.instruments) == (
        "fmp", "fmp", "1d", ("AAPL",),
    )  # fmt: skip
    assert len(batch) == 30 and batch.instrument_index.tolist() == [0] * 30
    days = [datetime.fromtimestamp(t / 1e6, UTC).date().isoformat() for t in batch.ts_us.tolist()]
    assert days == [r["date"] for r in rows] and days[-1] == "2025-01-31"
    assert batch.close.tolist() == [r["close"] for r in rows]
    assert batch.volume.tolist() == [float(r["volume"]) for r in rows]
    assert batch.vwap.tolist() == [r["vwap"] for r in rows]
    assert batch.trade_count.tolist() == [-1] * 30
    assert ("AAPL", "prices", "1d") in _done_units(database_url, connector.cfg.run_id)


async def test_fmp_forty_tickers_at_the_fakes_limit_see_no_429_and_fill_each_window(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Arrange: the fake allows 20 requests in any 2 s, and so does our budget; 80 requests
    caplog.set_level(logging.INFO, logger="connectors.fmp")
    symbols = [f"T{i:02d}X" for i in range(40)]
    async with FakeFmp(limit=20, window_s=2.0) as fake:
        connector = _connector(
            fake,
            database_url,
            symbols=",".join(symbols),
            statements="profile,income_statement",
            periods="annual",
            rate_limit=20,
            rate_window_s=2.0,
            progress_interval_s=1.0,
        )
        expected = sum(
            len(fake.body("profile", s)) + len(fake.body("income-statement", s, "annual", 10))
            for s in symbols
        )

        # Act
        items = await _refresh(connector, timeout_s=20)

    # Assert: no 429, everything, and every 2 s window from the first request used >= 90 %
    assert fake.rate_limited == 0
    assert len(fake.requests) == 80 and {r.status for r in fake.requests} == {200}
    assert len(_statements(items)) == len(items) == expected == 40 * (1 + 5)
    times = [r.at_s for r in fake.requests]
    windows = [sum(times[0] + 2 * k <= t < times[0] + 2 * (k + 1) for t in times) for k in range(4)]
    busiest = max(sum(t <= u < t + 2.0 for u in times) for t in times)
    assert all(n >= 18 for n in windows), windows
    assert 18 <= busiest <= 20, busiest
    stats = connector.provider_stats()["fmp"]
    assert (stats["done"], stats["total"], stats["requests_last_minute"]) == (80, 80, 80)
    assert stats["outcomes"] == {"ok": 80} and stats["budget"] == "20 per 2 s"
    progress = [r.getMessage() for r in caplog.records if "requests done" in r.getMessage()]
    assert any("ETA" in line for line in progress) and "80/80 requests done" in progress[-1]
    assert _sample("fmp_refresh_done") == _sample("fmp_refresh_total") == 80


async def test_fmp_refresh_stopped_half_way_resumes_with_only_the_remaining_requests(
    database_url: str,
) -> None:
    # Arrange: 10 tickers, 11 requests each
    symbols = ",".join(f"R{i}Y" for i in range(10))
    async with FakeFmp() as fake:
        first = _connector(fake, database_url, symbols=symbols)
        run_id, total = first.cfg.run_id, len(first.units())
        seen: list[Item] = []
        async with asyncio.timeout(10), _streaming(first) as stream:
            async for item in stream:
                seen.append(item)
                if first.stats.done == total // 2:
                    break  # holding the first record of the next request: not acknowledged
                first.delivered(item)
        done = _done_units(database_url, run_id)
        first_requests = len(fake.requests)

        # Act
        second = _connector(fake, database_url, symbols=symbols, run_id=run_id)
        rest = await _refresh(second)
        second_requests = [(r.endpoint, r.symbol, r.period) for r in fake.requests[first_requests:]]

    # Assert: the second run asks for exactly what the first had not confirmed
    assert total == 110 and len(done) == 55 and first_requests == 56
    assert first.provider_stats()["fmp"]["state"] == "stopped"
    not_done = [u for u in first.units() if (u.symbol, u.statement, u.period) not in done]
    expected = [
        (ENDPOINTS[u.statement], u.symbol, "" if u.statement == "profile" else u.period)
        for u in not_done
    ]
    assert second_requests == expected and len(second_requests) == 55
    assert second.provider_stats()["fmp"]["skipped"] == 55
    assert len(_done_units(database_url, run_id)) == 110
    both = [(s.symbol, s.statement, s.period, s.fiscal_date) for s in _statements(seen + rest)]
    today = datetime.now(UTC).date().isoformat()
    answer = [
        (u.symbol, u.statement, u.period, today if u.statement == "profile" else entry["date"])
        for u in first.units()
        for entry in fake.body(ENDPOINTS[u.statement], u.symbol, u.period, 40)
    ]
    assert set(both) == set(answer) and len(both) == len(answer) + 1  # one record twice


# failures


@pytest.mark.parametrize("status", [401, 200])  # 200: FMP's older endpoints say it in the body
async def test_fmp_refused_key_is_fatal_on_one_line_without_the_key(
    database_url: str, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # Arrange
    caplog.set_level(logging.DEBUG)
    async with FakeFmp() as fake:
        fake.refuse_keys(status)
        connector = _connector(fake, database_url, api_key=SECRET)

        # Act
        with pytest.raises(FatalError) as raised:
            await _refresh(connector)

    # Assert
    message = str(raised.value)
    assert f"HTTP {status}" in message and "Invalid API KEY" in message
    assert "FMP_API_KEY" in message and "apikey=***" in message
    assert "\n" not in message
    assert SECRET not in message and raised.value.__cause__ is None
    assert SECRET not in caplog.text
    assert len(fake.requests) == 1
    assert connector.provider_stats()["fmp"]["state"] == "failed"


async def test_fmp_unreachable_is_transient_and_masks_the_key(database_url: str) -> None:
    # Arrange: a port that was just served and is now closed
    async with FakeFmp() as fake:
        connector = _connector(fake, database_url, api_key=SECRET)

    # Act
    with pytest.raises(TransientError) as raised:
        await _refresh(connector)

    # Assert
    assert "cannot reach" in str(raised.value) and "apikey=***" in str(raised.value)
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value.__cause__)


async def test_fmp_html_page_is_rejected_and_the_refresh_goes_on(database_url: str) -> None:
    # Arrange
    async with FakeFmp() as fake:
        fake.serve_html("MSFT")
        connector = _connector(fake, database_url)
        today = datetime.now(UTC).date().isoformat()

        # Act
        items = await _refresh(connector)

    # Assert: AAPL whole, each MSFT request rejected with the page, and left to the next run
    rejected = [item for item in items if isinstance(item, Rejected)]
    got = [(s.symbol, s.statement, s.period, s.fiscal_date, s.body) for s in _statements(items)]
    assert got == _recorded("AAPL", today)
    assert len(rejected) == 11 and {r.reason for r in rejected} == {"html_page"}
    assert all("Down for maintenance" in r.detail for r in rejected)
    assert {r.payload for r in rejected} == {HTML_PAGE.encode()}
    assert {u[0] for u in _done_units(database_url, connector.cfg.run_id)} == {"AAPL"}
    stats = connector.provider_stats()["fmp"]
    assert (stats["state"], stats["done"], stats["rejected_units"]) == ("finished", 11, 11)


async def test_fmp_empty_ticker_is_counted_and_done_not_an_error(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Arrange
    caplog.set_level(logging.INFO, logger="connectors.fmp")
    async with FakeFmp() as fake:
        fake.serve_empty("ZZZZ")
        connector = _connector(fake, database_url, symbols="AAPL,ZZZZ", prices=True)

        # Act
        items = await _refresh(connector)

    # Assert
    assert {s.symbol for s in _statements(items)} == {"AAPL"}
    assert not [item for item in items if isinstance(item, Rejected)]
    stats = connector.provider_stats()["fmp"]
    assert (stats["empty_units"], stats["done"], stats["total"]) == (12, 24, 24)
    assert "fmp: ZZZZ income_statement quarter: FMP has none" in caplog.text


@pytest.mark.parametrize("retry_after", [True, False])  # FMP's own 429 comes without one
async def test_fmp_429_is_waited_out_and_asked_again_never_skipped(
    database_url: str, retry_after: bool
) -> None:
    # Arrange: the fake allows 4 requests a second; our budget, wrongly, 100
    async with FakeFmp(limit=4, window_s=1.0, retry_after=retry_after) as fake:
        connector = _connector(
            fake, database_url, symbols="AAPL", rate_limit=100, rate_window_s=1.0
        )
        limited_before = _sample("fmp_requests_total", outcome="rate_limited")

        # Act
        items = await _refresh(connector, timeout_s=15)

    # Assert: every statement, every request answered once with 200 after its 429s
    today = datetime.now(UTC).date().isoformat()
    got = [(s.symbol, s.statement, s.period, s.fiscal_date, s.body) for s in _statements(items)]
    assert got == _recorded("AAPL", today)
    assert fake.rate_limited >= 1
    assert sum(r.status == 200 for r in fake.requests) == 11
    assert sum(r.status == 429 for r in fake.requests) == fake.rate_limited
    stats = connector.provider_stats()["fmp"]
    assert stats["outcomes"] == {"ok": 11, "rate_limited": fake.rate_limited}
    assert (
        _sample("fmp_requests_total", outcome="rate_limited") - limited_before == fake.rate_limited
    )


# the parsers and the settings, on their own

UNIT = Unit("AAPL", "income_statement", "annual")
RECV_US = 1_738_368_000_000_000  # 2025-02-01 00:00 UTC


def test_parse_statements_bad_entries_are_rejected_alone() -> None:
    good = {"date": "2024-09-28", "symbol": "AAPL", "acceptedDate": "2024-11-01 06:01:36"}
    body = orjson.dumps(
        [good, 42, {"date": "2024-13-01"}, {"symbol": "MSFT", "date": "2024-06-30"}]
    )

    parsed = parse_statements(body, UNIT, RECV_US)

    assert parsed.complete and parsed.records == 1
    reasons = [i.reason for i in parsed.items if isinstance(i, Rejected)]
    assert reasons == ["malformed_statement", "malformed_statement", "wrong_symbol"]
    assert parsed.items[0] == FundamentalStatement(
        "AAPL", "income_statement", "annual", "2024-09-28", "fmp", orjson.dumps(good),
        1_730_455_296_000_000, RECV_US,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (HTML_PAGE.encode(), "text/html", "html_page"),
        (b"<html><body>502</body></html>", "application/json", "html_page"),
        (b'[{"date": "2024-09-28"', "application/json", "undecodable"),
        (b'{"date": "2024-09-28"}', "application/json", "malformed_response"),
        (b'{"Error Message": "Something went wrong"}', "application/json", "provider_error"),
    ],
)
def test_parse_statements_bad_bodies_are_rejected_whole(
    body: bytes, content_type: str, reason: str
) -> None:
    parsed = parse_statements(body, UNIT, RECV_US, content_type)

    assert not parsed.complete
    assert [(i.reason, i.payload) for i in parsed.items if isinstance(i, Rejected)] == [
        (reason, body)
    ]


def test_parse_statements_error_body_gives_fmps_message() -> None:
    body = b'{"Error Message": "Limit Reach . Please upgrade your plan"}'

    assert parse_statements(body, UNIT, RECV_US).error == "Limit Reach . Please upgrade your plan"


def test_parse_statements_empty_list_is_complete_and_empty() -> None:
    parsed = parse_statements(b"[]", UNIT, RECV_US)

    assert parsed.complete and parsed.items == ()


def test_parse_prices_bad_rows_are_rejected_and_the_rest_sorted() -> None:
    rows = [
        {"date": "2025-01-31", "open": 2, "high": 3, "low": 1, "close": 2.5, "volume": 10},
        {"date": "2025-01-30", "open": 2, "high": 3, "low": 1, "close": -1, "volume": 10},
        {"date": "2025-01-29", "open": 2, "high": 3, "low": 1, "close": 2.0, "volume": 10},
    ]
    unit = Unit("AAPL", "prices", "1d")

    parsed = parse_prices(orjson.dumps({"symbol": "AAPL", "historical": rows}), unit, RECV_US)

    bad, batch = parsed.items  # body order: the rejected row, then the batch of the rest
    assert isinstance(batch, ProviderBarBatch) and isinstance(bad, Rejected)
    assert batch.close.tolist() == [2.0, 2.5] and bad.reason == "bad_bar"
    assert (
        parse_prices(b"{}", unit, RECV_US).complete and not parse_prices(b"{}", unit, RECV_US).items
    )


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-11-01 06:01:36", datetime(2024, 11, 1, 10, 1, 36, tzinfo=UTC)),  # EDT
        ("2024-01-30 16:08:03", datetime(2024, 1, 30, 21, 8, 3, tzinfo=UTC)),  # EST
        ("2020-10-30", datetime(2020, 10, 30, 4, tzinfo=UTC)),
        ("2019-10-31 00:00:00", datetime(2019, 10, 31, 4, tzinfo=UTC)),
    ],
)
def test_edgar_time_us_reads_us_eastern(text: str, utc: datetime) -> None:
    assert edgar_time_us(text) == int(utc.timestamp()) * 1_000_000


def test_edgar_time_us_not_a_time_is_none() -> None:
    assert [edgar_time_us(t) for t in ("", "soon", "2024-02-30", 20241101, None)] == [None] * 5


def test_retry_after_s_reads_seconds_and_dates_and_refuses_the_rest() -> None:
    now = datetime(2025, 2, 1, tzinfo=UTC)
    assert retry_after_s("3", now) == 3.0
    assert retry_after_s("Sat, 01 Feb 2025 00:00:30 GMT", now) == 30.0
    assert [retry_after_s(v, now) for v in (None, "", "inf", "nan", "soon")] == [None] * 5


def test_fmp_config_key_from_fmp_api_key_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Arrange
    monkeypatch.setenv("FMP_API_KEY", SECRET)
    tickers = tmp_path / "sp500.txt"
    tickers.write_text("# S&P 500\naapl\nMSFT  # Microsoft\n\nBRK.B\nAAPL\n")

    # Act
    config = FmpConfig(symbols="NVDA", symbols_file=tickers)

    # Assert
    assert config.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())
    assert config.tickers() == ["NVDA", "AAPL", "MSFT", "BRK.B"]
    assert config.run_id == datetime.now(UTC).date().isoformat()


@pytest.mark.parametrize(
    "settings",
    [
        {"symbols": ""},
        {"symbols": "AAPL", "statements": "income_statement,dividends"},
        {"symbols": "AAPL", "periods": "ttm"},
        {"symbols": "AAPL", "base_url": "https://financialmodelingprep.com/?apikey=x"},
        {"symbols": "AAPL", "api_key": " "},
        {"symbols_file": "/nonexistent/tickers.txt"},
    ],
)
def test_fmp_config_invalid_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FmpConfig(**({"api_key": "k"} | settings))


async def test_fmp_refresh_marks_nothing_done_that_kafka_did_not_acknowledge(
    database_url: str,
) -> None:
    # Arrange: a whole refresh whose records never reach Kafka (nobody calls delivered)
    async with FakeFmp() as fake:
        first = _connector(fake, database_url, symbols="AAPL,MSFT")
        async with asyncio.timeout(10), _streaming(first) as stream:
            items = [item async for item in stream]
        requests = len(fake.requests)

        # Act: the same run again, its records acknowledged this time
        second = _connector(fake, database_url, symbols="AAPL,MSFT", run_id=first.cfg.run_id)
        again = await _refresh(second)

    # Assert: every request was made again, and only now is the run done
    assert len(_statements(items)) == len(_statements(again)) > 0
    assert len(fake.requests) == 2 * requests
    assert _done_units(database_url, first.cfg.run_id) and second.stats.done == len(second.units())
