"""The read API's history besides bars: `GET /gaps` (which spans are missing and what became of
them) and `GET /fundamentals/{symbol}` (financial statements), each behind a read key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import orjson
import psycopg
import pytest
from conftest import http_request

from shared.backfill import queue
from shared.models import FundamentalStatement, Gap, GapCause
from shared.times import micros_of
from streams.fundamentals.agent import UPSERT_SQL, _row

KEY = "read-key-3c91"
DETECTED_US = micros_of(datetime(2026, 11, 30, 15, 2, 7, tzinfo=UTC))


@pytest.fixture
def api(database_url: str, start_api: Callable[..., str]) -> str:
    return start_api(database_url, MS_API_KEYS=KEY)


def gap(instrument: str, start: datetime, minutes: int, cause: GapCause) -> Gap:
    start_us = micros_of(start)
    return Gap(
        instrument=instrument,
        interval="1m",
        start_us=start_us,
        end_us=start_us + minutes * 60_000_000,
        cause=cause,
        detail=f"{cause} on the alpaca feed",
        detected_at_us=DETECTED_US,
        ts_recv_us=DETECTED_US + 1_250,
        provider="alpaca",
        tier="T0",
    )


async def test_gaps_are_listed_newest_first_and_filtered(api: str, database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        for g in (
            gap("AAPL", datetime(2026, 11, 30, 14, 41, tzinfo=UTC), 3, GapCause.DISCONNECT),
            gap("AAPL", datetime(2026, 11, 30, 15, 0, tzinfo=UTC), 2, GapCause.SILENCE),
            gap("MSFT", datetime(2026, 11, 30, 14, 50, tzinfo=UTC), 5, GapCause.SILENCE),
        ):
            await queue.record_gap(db, g)
        await db.execute("update gaps set status = 'repaired' where instrument = 'MSFT'")

    everything = http_request(f"{api}/gaps", key=KEY).json()["gaps"]
    aapl = http_request(f"{api}/gaps?symbol=AAPL&end=2026-11-30T14:59:00Z", key=KEY).json()
    repaired = http_request(f"{api}/gaps?status=repaired", key=KEY).json()["gaps"]

    assert [(g["instrument"], g["start_ts"]) for g in everything] == [
        ("AAPL", "2026-11-30T15:00:00Z"),
        ("MSFT", "2026-11-30T14:50:00Z"),
        ("AAPL", "2026-11-30T14:41:00Z"),
    ]
    assert [g["cause"] for g in aapl["gaps"]] == ["disconnect"]
    assert aapl["gaps"][0]["duration_s"] == 180.0 and aapl["gaps"][0]["tier"] == "T0"
    assert [(g["instrument"], g["status"]) for g in repaired] == [("MSFT", "repaired")]
    assert http_request(f"{api}/gaps?status=lost", key=KEY).status == 400
    assert http_request(f"{api}/gaps").status == 401


def test_fundamentals_newest_first_filtered_by_statement(api: str, database_url: str) -> None:
    def statement(kind: str, fiscal: date, revenue: float) -> FundamentalStatement:
        return FundamentalStatement(
            symbol="AAPL",
            statement=kind,
            period="annual",
            fiscal_date=fiscal.isoformat(),
            provider="fmp",
            body=orjson.dumps({"revenue": revenue, "reportedCurrency": "USD"}),
            ts_event_us=micros_of(datetime(2026, 10, 31, 20, 30, tzinfo=UTC)),
            ts_recv_us=micros_of(datetime(2026, 11, 2, 13, 0, 4, tzinfo=UTC)),
        )

    with psycopg.connect(database_url) as conn:
        for s in (
            statement("income_statement", date(2025, 9, 27), 416_161_000_000.0),
            statement("income_statement", date(2026, 9, 26), 437_905_000_000.0),
            statement("balance_sheet", date(2026, 9, 26), 0.0),
        ):
            conn.execute(UPSERT_SQL, _row(s))

    answer = http_request(f"{api}/fundamentals/AAPL?statement=income_statement", key=KEY).json()

    assert [(s["fiscal_date"], s["body"]["revenue"]) for s in answer["statements"]] == [
        ("2026-09-26", 437_905_000_000.0),
        ("2025-09-27", 416_161_000_000.0),
    ]
    assert answer["statements"][0]["ts_event"] == "2026-10-31T20:30:00Z"
    assert http_request(f"{api}/fundamentals/MSFT", key=KEY).status == 404
    assert http_request(f"{api}/fundamentals/AAPL?limit=201", key=KEY).status == 400


def test_readers_get_the_matched_pairs_and_not_the_review_queue(
    api: str, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """insert into market_matches (a_key, b_key, score, rank, decision, auto_decision,
                   evidence)
               values ('kalshi:KXFEDDECISION-26DEC-H0', 'polymarket:0x5f1e', 0.93, 1, 'match',
                       'match', '{"title": 0.91}'),
                      ('kalshi:KXCPI-26DEC-T3.0', 'polymarket:0x77aa', 0.71, 1, 'review',
                       'review', '{"title": 0.70}')"""
        )

    matched = http_request(f"{api}/matches", key=KEY).json()["matches"]

    assert [(m["a_key"], m["b_key"], m["score"]) for m in matched] == [
        ("kalshi:KXFEDDECISION-26DEC-H0", "polymarket:0x5f1e", 0.93)
    ]
    assert http_request(f"{api}/ops/matches", key=KEY).status == 401  # a read key is no ops key
