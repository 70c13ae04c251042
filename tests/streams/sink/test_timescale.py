"""Migrations and BarWriter on a real TimescaleDB: hypertable, policies, retention job, bars_1w.

Set TIMESCALE_TEST_URL to a database on a TimescaleDB server whose user may create databases;
each test runs in a database of its own on that server, dropped afterwards. Jobs are run with
`CALL run_job` and the continuous aggregate refreshed explicitly, so the background scheduler
is not needed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from conftest import run_module
from daily import bar, daily_bars, day_us, micros
from psycopg.conninfo import make_conninfo

from shared.models import Bar
from streams.migrations import WEEKLY_COLUMNS, migrate
from streams.sink.copy import COLUMNS
from streams.sink.timescale import BarWriter

pytestmark = pytest.mark.skipif(
    not os.environ.get("TIMESCALE_TEST_URL"),
    reason="set TIMESCALE_TEST_URL to a TimescaleDB database to run these tests",
)

# As in test_migrations: A has a bar in the week of 2023-12-25, four in the week of 2024-01-01
# (given out of order) and one in the week of 2024-01-08; B trades nothing in its week.
# The plain-PostgreSQL view's query, to compare with the continuous aggregate on the same rows.
PLAIN_WEEKLY_QUERY = (
    "select"
    + WEEKLY_COLUMNS.format(
        bucket="date_trunc('week', ts)",
        first_open="(array_agg(open order by ts))[1]",
        last_close="(array_agg(close order by ts desc))[1]",
    )
    + " order by instrument, ts"
)
WeekRow = tuple[object, ...]


def stored(url: str) -> list[Bar]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select {', '.join(COLUMNS)} from bars order by instrument, interval, ts"
        ).fetchall()
    return [
        Bar(i, n, micros(ts), rev, *values, source, micros(ev), micros(rv), seq)  # type: ignore[call-arg]
        for i, n, ts, rev, *values, source, ev, rv, seq in rows
    ]


def week_rows(conn: psycopg.Connection, query: str) -> list[WeekRow]:
    return [
        (r[0], micros(r[1]), *r[2:7], None if r[7] is None else pytest.approx(r[7]), int(r[8]))
        for r in conn.execute(query).fetchall()
    ]


@pytest.fixture
def timescale_url() -> Iterator[str]:
    """A new, empty database on the TimescaleDB server; dropped after the test."""
    base = os.environ["TIMESCALE_TEST_URL"]
    admin = make_conninfo(base, dbname="postgres")
    name = f"ms_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = make_conninfo(base, dbname=name)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database "{name}" with (force)')


@pytest.fixture
async def writer(timescale_url: str) -> AsyncIterator[BarWriter]:
    migrate(timescale_url)
    bar_writer = BarWriter(timescale_url)
    yield bar_writer
    await bar_writer.close()


def jobs(url: str, proc_name: str) -> list[tuple[int, dict[str, object]]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select job_id, config from timescaledb_information.jobs"
            " where proc_name = %s order by job_id",
            (proc_name,),
        ).fetchall()


def test_migrate_twice_on_timescale_makes_hypertable_with_policies(timescale_url: str) -> None:
    first = migrate(timescale_url)
    second = migrate(timescale_url)

    assert (first, second) == (True, True)
    with psycopg.connect(timescale_url) as conn:
        hypertables = conn.execute(
            "select hypertable_name, compression_enabled from timescaledb_information.hypertables"
            " where hypertable_name = 'bars'"
        ).fetchall()
        dimension = conn.execute(
            "select column_name, time_interval from timescaledb_information.dimensions"
            " where hypertable_name = 'bars'"
        ).fetchall()
        cagg = conn.execute(
            "select view_name from timescaledb_information.continuous_aggregates"
        ).fetchall()
        checkpoints = conn.execute("select to_regclass('bar_checkpoints')").fetchone()
    assert hypertables == [("bars", True)]
    assert dimension == [("ts", timedelta(days=1))]
    assert cagg == [("bars_1w",)]
    assert checkpoints == ("bar_checkpoints",)
    compression = jobs(timescale_url, "policy_compression")
    assert [config["compress_after"] for _, config in compression] == ["14 days"]
    assert [config for _, config in jobs(timescale_url, "marketstream_bars_retention")] == [
        {"1m": 365}
    ]
    assert len(jobs(timescale_url, "policy_refresh_continuous_aggregate")) == 1


def test_migrate_cli_other_compress_after_days_replaces_policy(timescale_url: str) -> None:
    migrate(timescale_url)

    result = run_module(
        ["streams", "db", "migrate"],
        {
            "MS_DATABASE_URL": timescale_url,
            "MS_SINK_COMPRESS_AFTER_DAYS": "3",
            "MS_SINK_RETENTION": "1m=30,1s=7",
        },
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tables ready (TimescaleDB)"
    compression = jobs(timescale_url, "policy_compression")
    assert [config["compress_after"] for _, config in compression] == ["3 days"]
    assert [config for _, config in jobs(timescale_url, "marketstream_bars_retention")] == [
        {"1m": 30, "1s": 7}
    ]


def test_migrate_again_after_chunks_are_compressed_succeeds(timescale_url: str) -> None:
    migrate(timescale_url)
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute(
            "insert into bars (instrument, interval, ts, revision, open, high, low, close, volume,"
            " vwap, trade_count, source, ts_event, ts_recv)"
            " values ('A', '1m', '2024-01-01', 0, 1, 1, 1, 1, 1, 1, 1, 'test', now(), now())"
        )
        conn.execute("select compress_chunk(c) from show_chunks('bars') c")

    again = migrate(timescale_url, compress_after_days=7)

    assert again is True
    assert [c["compress_after"] for _, c in jobs(timescale_url, "policy_compression")] == ["7 days"]


def test_retention_job_deletes_old_1m_rows_only(timescale_url: str) -> None:
    migrate(timescale_url)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=400), now - timedelta(days=10)
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.cursor().executemany(
            "insert into bars (instrument, interval, ts, revision, open, high, low, close, volume,"
            " vwap, trade_count, source, ts_event, ts_recv)"
            " values (%s, %s, %s, 0, 1, 1, 1, 1, 1, 1, 1, 'test', %s, %s)",
            [
                (i, n, ts, ts, ts)
                for i, n, ts in [
                    ("A", "1m", old),
                    ("B", "1m", old - timedelta(days=30)),
                    ("A", "1m", recent),
                    ("A", "1h", old),
                    ("A", "1d", old - timedelta(days=3000)),
                ]
            ],
        )
    [(job_id, _)] = jobs(timescale_url, "marketstream_bars_retention")

    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute("call run_job(%s)", (job_id,))
        left = conn.execute(
            "select instrument, interval, ts from bars order by interval, instrument"
        ).fetchall()

    assert [(i, n) for i, n, _ in left] == [("A", "1d"), ("A", "1h"), ("A", "1m")]
    assert left[2][2] == recent


async def test_weekly_aggregate_equals_plain_view_and_reference(
    writer: BarWriter, timescale_url: str
) -> None:
    minute = bar("A", "1m", day_us(date(2024, 1, 2)), high=1000.0, low=0.001, volume=1000.0)
    assert await writer.write([*daily_bars(), minute]) == []

    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute("call refresh_continuous_aggregate('bars_1w', null, null)")
        aggregate = week_rows(
            conn,
            "select instrument, ts, open, high, low, close, volume, vwap, trade_count"
            " from bars_1w order by instrument, ts",
        )
        plain = week_rows(conn, PLAIN_WEEKLY_QUERY)

    assert aggregate == plain
    assert [r[:7] + r[8:] for r in aggregate] == [
        ("A", day_us(date(2023, 12, 25)), 10.0, 12.0, 9.0, 11.0, 2.0, 4),
        ("A", day_us(date(2024, 1, 1)), 11.0, 16.0, 10.0, 13.5, 8.5, 17),
        ("A", day_us(date(2024, 1, 8)), 13.5, 14.0, 13.0, 13.75, 2.0, 3),
        ("B", day_us(date(2024, 1, 1)), 100.0, 100.0, 100.0, 100.0, 0.0, 0),
    ]
    assert [r[7] for r in aggregate] == [
        10.5,
        pytest.approx((4 * 11.5 + 0.5 * 14.5 + 1 * 14.0 + 3 * 13.0) / 8.5),
        13.5,
        None,
    ]


async def test_writer_on_hypertable_keeps_highest_revision(
    writer: BarWriter, timescale_url: str
) -> None:
    t0 = day_us(date(2024, 1, 1))
    await writer.write([bar("A", ts_us=t0, revision=1), bar("A", ts_us=t0, revision=3, close=3.0)])

    refused = await writer.write(
        [bar("A", ts_us=t0, revision=2, close=2.0), bar("B", ts_us=t0 - 1, revision=0)]
    )

    assert refused == []
    assert stored(timescale_url) == [
        bar("A", ts_us=t0, revision=3, close=3.0),
        bar("B", ts_us=t0 - 1, revision=0),
    ]


async def test_writer_upserts_into_compressed_chunk(writer: BarWriter, timescale_url: str) -> None:
    t0 = day_us(date(2024, 1, 1))
    await writer.write(
        [bar("A", ts_us=t0, revision=1), bar("A", ts_us=t0 + 60_000_000, revision=5, close=5.0)]
    )
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        compressed = conn.execute("select compress_chunk(c) from show_chunks('bars') c").fetchall()
        status = conn.execute(
            "select is_compressed from timescaledb_information.chunks where hypertable_name = 'bars'"
        ).fetchall()
    assert len(compressed) == 1 and status == [(True,)]

    refused = await writer.write(
        [
            bar("A", ts_us=t0, revision=2, close=2.0),
            bar("A", ts_us=t0 + 60_000_000, revision=4, close=4.0),
            bar("A", ts_us=t0 + 120_000_000, revision=0),
        ]
    )

    assert refused == []
    assert stored(timescale_url) == [
        bar("A", ts_us=t0, revision=2, close=2.0),
        bar("A", ts_us=t0 + 60_000_000, revision=5, close=5.0),
        bar("A", ts_us=t0 + 120_000_000, revision=0),
    ]


async def test_candles_intraday_delete_on_compressed_hypertable_deletes_the_window_only(
    writer: BarWriter, timescale_url: str
) -> None:
    # The runbook deletes through the view; on this path `bars` is a hypertable, compressed.
    session_open = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    t0 = micros(session_open)
    minute_bars = [bar("A", ts_us=t0 + m * 60_000_000) for m in range(30)]
    assert await writer.write([*minute_bars, bar("B", ts_us=t0 + 15 * 60_000_000)]) == []
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute("select compress_chunk(c) from show_chunks('bars') c")

        conn.execute(
            "delete from candles_intraday where symbol = %s and ts >= %s and ts < %s",
            ("A", session_open + timedelta(minutes=10), session_open + timedelta(minutes=20)),
        )
        left = conn.execute(
            "select symbol, ts from candles_intraday order by symbol, ts"
        ).fetchall()

    assert [(s, micros(ts)) for s, ts in left] == [
        *(("A", t0 + m * 60_000_000) for m in [*range(10), *range(20, 30)]),
        ("B", t0 + 15 * 60_000_000),
    ]
