"""`GET /bars/{symbol}` on the HTTP API as analysts use it: two sessions of 1m bars paged by
cursor, the same page as JSON, CSV and Parquet, time ranges, the latest revision, bad requests,
hostile symbols and the per-key rate."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pyarrow.parquet as pq
import pytest
from conftest import http_request

from shared.models import Bar, BarBatch
from shared.times import micros_of, rfc3339
from streams.sink.timescale import BarWriter

KEY = "read-key-5f0a"
MINUTE_US = 60_000_000
RECEIVED_US = micros_of(datetime(2026, 11, 30, 22, 4, 51, 907_000, tzinfo=UTC))  # a backfill
SESSIONS = (  # 09:30 New York on two days: 390 one-minute bars each
    micros_of(datetime(2026, 11, 27, 14, 30, tzinfo=UTC)),
    micros_of(datetime(2026, 11, 30, 14, 30, tzinfo=UTC)),
)


def minute_bar(instrument: str, ts_us: int, n: int, revision: int = 0, **values: float) -> Bar:
    price = 187.25 + 0.01 * (n % 97) - 0.02 * (n % 13)
    fields: dict[str, object] = {
        "open": price,
        "high": price + 0.18,
        "low": price - 0.11,
        "close": price + 0.04,
        "volume": 1_200.0 + 17 * (n % 50),
        "vwap": price + 0.02,
        "trade_count": 40 + n % 31,
        "buy_volume": 700.0 + 9 * (n % 50),
        "sell_volume": 500.0 + 8 * (n % 50),
        "source": "alpaca",
        "ts_event_us": ts_us + 59_412_118,
        "ts_recv_us": RECEIVED_US + revision * 1_000_000,
        "seq": 10_000 + n,
    } | values
    return Bar(instrument, "1m", ts_us, revision, **fields)  # type: ignore[arg-type]


def session_bars(instrument: str) -> list[Bar]:
    return [
        minute_bar(instrument, start + i * MINUTE_US, i + 390 * day)
        for day, start in enumerate(SESSIONS)
        for i in range(390)
    ]


@pytest.fixture
async def stored(database_url: str) -> list[Bar]:
    """AAPL's two sessions (one bar revised), and MSFT's beside them; AAPL's bars as stored."""
    aapl = session_bars("AAPL")
    revised = minute_bar("AAPL", aapl[7].ts_us, 7, revision=2, close=188.91, high=189.0)
    writer = BarWriter(database_url)
    try:
        for bars in (aapl, session_bars("MSFT"), [revised]):
            assert await writer.write_batches([BarBatch.from_bars(bars)]) == []
    finally:
        await writer.close()
    aapl[7] = revised
    return aapl


@pytest.fixture
def api(database_url: str, start_api: Callable[..., str]) -> str:
    return start_api(database_url, MS_API_KEYS=KEY)


def as_json(bar: Bar) -> dict[str, object]:
    return {
        "ts": rfc3339(bar.ts_us),
        "ts_us": bar.ts_us,
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
        "ts_event_us": bar.ts_event_us,
        "ts_recv_us": bar.ts_recv_us,
    }


def test_pages_walk_every_bar_once_oldest_first_with_the_latest_revision(
    api: str, stored: list[Bar]
) -> None:
    got, pages, url = [], 0, f"{api}/bars/AAPL?interval=1m&limit=300"
    while url:
        answer = http_request(url, key=KEY)
        assert answer.status == 200, answer.body
        page = answer.json()
        assert (page["symbol"], page["interval"]) == ("AAPL", "1m")
        got += page["bars"]
        pages += 1
        assert (page["next"] is None) == ("X-Next-Cursor" not in answer.headers)
        url = f"{api}{page['next']}" if page["next"] else ""

    assert pages == 3  # 300 + 300 + 180
    assert got == [as_json(b) for b in stored]
    assert got[7]["revision"] == 2 and got[7]["close"] == 188.91


def test_csv_and_parquet_hold_the_same_page_as_json(api: str, stored: list[Bar]) -> None:
    query = f"{api}/bars/AAPL?interval=1m&start=2026-11-30T14:30:00Z&limit=120"
    page = http_request(query, key=KEY).json()
    as_csv = http_request(query, key=KEY, headers={"Accept": "text/csv"})
    as_parquet = http_request(f"{query}&format=parquet", key=KEY)

    assert as_csv.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.body.decode())))
    assert [r["ts"] for r in rows] == [b["ts"] for b in page["bars"]]
    assert {r["symbol"] for r in rows} == {"AAPL"}
    assert [float(r["close"]) for r in rows] == [b["close"] for b in page["bars"]]
    assert as_csv.headers["X-Next-Cursor"] == page["next_cursor"]

    assert as_parquet.headers["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(as_parquet.body))
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert table.column("ts_us").to_pylist() == [b["ts_us"] for b in page["bars"]]
    assert table.column("trade_count").to_pylist() == [b["trade_count"] for b in page["bars"]]
    assert table.num_rows == 120 and page["bars"][0]["ts_us"] == SESSIONS[1]


def test_start_and_end_take_rfc3339_or_microseconds_end_excluded(
    api: str, stored: list[Bar]
) -> None:
    start = SESSIONS[0] + 5 * MINUTE_US
    by_text = http_request(
        f"{api}/bars/AAPL?start=2026-11-27T09:35:00-05:00&end=2026-11-27T14:40:00Z", key=KEY
    ).json()
    by_micros = http_request(
        f"{api}/bars/AAPL?start={start}&end={start + 5 * MINUTE_US}", key=KEY
    ).json()

    assert [b["ts_us"] for b in by_text["bars"]] == [start + i * MINUTE_US for i in range(5)]
    assert by_micros == by_text
    assert by_text["next_cursor"] is None


BAD_QUERIES = {
    "interval=7m": "interval",
    "limit=0": "limit",
    "limit=50001": "limit",
    "cursor=bm90LW91cnM": "cursor",
    "start=yesterday": "start",
    "start=2026-11-30T15:00:00Z&end=2026-11-30T14:00:00Z": "end must be after start",
    "format=xlsx": "format",
}


def test_bad_queries_get_400_saying_what_is_wrong(api: str) -> None:
    for query, error in BAD_QUERIES.items():
        answer = http_request(f"{api}/bars/AAPL?{query}", key=KEY)

        assert answer.status == 400, query
        assert error in answer.json()["error"], query


def test_missing_or_wrong_keys_get_401_and_hostile_symbols_only_miss(
    api: str, stored: list[Bar], database_url: str
) -> None:
    assert http_request(f"{api}/bars/AAPL").status == 401
    assert http_request(f"{api}/bars/AAPL", key="read-key-5f0b").json() == {
        "error": "unknown or missing API key"
    }
    for symbol in ("';DROP/**/TABLE/**/bars;--", "AAPL'OR'1'='1", "EUR/USD"):
        answer = http_request(f"{api}/bars/{symbol}", key=KEY)
        assert answer.status == 200 and answer.json()["bars"] == []
    spaced = http_request(f"{api}/bars/%27%3B%20DROP%20TABLE%20bars%3B%20--", key=KEY)
    assert spaced.status == 400 and "whitespace" in spaced.json()["error"]

    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from bars").fetchone() == (2 * 780,)


def test_a_key_over_its_rate_gets_429_with_retry_after(
    database_url: str, start_api: Callable[..., str]
) -> None:
    api = start_api(database_url, MS_API_KEYS=f"{KEY},other-key-77", MS_API_RATE_LIMIT="3/minute")

    statuses = [http_request(f"{api}/bars/AAPL", key=KEY).status for _ in range(4)]
    refused = http_request(f"{api}/bars/AAPL", key=KEY)

    assert statuses == [200, 200, 200, 429]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "3 per 1 minute" in refused.json()["error"]
    assert http_request(f"{api}/bars/AAPL", key="other-key-77").status == 200  # its own rate
    metrics = http_request(f"{api}/metrics").body.decode()
    assert 'api_rate_limited_total{route="/bars/{symbol}"} 2.0' in metrics
    assert 'api_requests_total{route="/bars/{symbol}",status="429"} 2.0' in metrics
