"""Migrations on plain PostgreSQL: tables, the `bars_1w` view, and per-interval retention."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import orjson
import psycopg
import pytest
from conftest import PostgresServer, run_module
from daily import DAILY, bar, daily_bars, day_us, micros

from shared.bar_fields import BAR_NAMES
from shared.errors import ConfigError
from streams.embedded.postgres import ensure_database
from streams.migrations import apply_retention, migrate, parse_retention
from streams.sink.timescale import BarWriter

DAY_US = 86_400_000_000
# (instrument, day, open, high, low, close, volume, vwap, trade_count), deliberately not in time
# order. 2024-01-01 is a Monday: A has one bar in the week of 2023-12-25 (Sunday 12-31), four in
# the week of 2024-01-01 (Monday to Sunday) and one in the week of 2024-01-08; B trades nothing.
WeekRow = tuple[str, int, float, float, float, float, float, float | None, int]


def reference_weeks() -> list[WeekRow]:
    """The weekly bars of DAILY, computed in Python: weeks start on Monday, UTC."""
    weeks: dict[tuple[str, date], list[tuple[object, ...]]] = {}
    for row in DAILY:
        day = row[1]
        weeks.setdefault((row[0], day - timedelta(days=day.weekday())), []).append(row)
    result = []
    for (instrument, monday), rows in sorted(weeks.items()):
        rows.sort(key=lambda r: r[1])  # type: ignore[arg-type, return-value]
        volume = sum(r[6] for r in rows)  # type: ignore[misc]
        weighted = sum(r[7] * r[6] for r in rows)  # type: ignore[operator]
        result.append(
            (
                instrument,
                day_us(monday),
                rows[0][2],
                max(r[3] for r in rows),
                min(r[4] for r in rows),
                rows[-1][5],
                volume,
                weighted / volume if volume else None,
                sum(r[8] for r in rows),
            )
        )
    return result  # type: ignore[return-value]


def weekly_rows(conn: psycopg.Connection) -> list[WeekRow]:
    rows = conn.execute(
        "select instrument, ts, open, high, low, close, volume, vwap, trade_count"
        " from bars_1w order by instrument, ts"
    ).fetchall()
    return [(r[0], micros(r[1]), *r[2:8], int(r[8])) for r in rows]


def assert_same_weeks(found: list[WeekRow], expected: list[WeekRow]) -> None:
    assert [r[:7] + r[8:] for r in found] == [r[:7] + r[8:] for r in expected]
    assert [r[7] for r in found] == [
        pytest.approx(r[7]) if r[7] is not None else None for r in expected
    ]


def insert_rows(url: str, rows: list[tuple[str, str, datetime]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.cursor().executemany(
            "insert into bars (instrument, interval, ts, revision, open, high, low, close, volume,"
            " vwap, trade_count, source, ts_event, ts_recv)"
            " values (%s, %s, %s, 0, 1, 1, 1, 1, 1, 1, 1, 'test', %s, %s)",
            [(i, n, ts, ts, ts) for i, n, ts in rows],
        )


def remaining(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (r[0], r[1])
            for r in conn.execute("select instrument, interval from bars order by 1, 2").fetchall()
        ]


@pytest.fixture
def fresh_database(postgres: PostgresServer) -> Iterator[str]:
    """An empty database on the session server, dropped after the test."""
    name = f"migrate_{uuid.uuid4().hex[:12]}"
    url = ensure_database(postgres.port, name)
    yield url
    with psycopg.connect(
        f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres", autocommit=True
    ) as conn:
        conn.execute(f'drop database "{name}" with (force)')


def test_migrate_twice_on_plain_postgres_creates_tables_index_and_weekly_view(
    fresh_database: str,
) -> None:
    first = migrate(fresh_database)
    second = migrate(fresh_database)

    assert (first, second) == (False, False)
    with psycopg.connect(fresh_database) as conn:
        primary_key = conn.execute(
            "select a.attname from pg_index i"
            " join lateral unnest(i.indkey) with ordinality k(attnum, n) on true"
            " join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum"
            " where i.indrelid = 'bars'::regclass and i.indisprimary order by k.n"
        ).fetchall()
        checkpoint_key = conn.execute(
            "select a.attname from pg_index i"
            " join lateral unnest(i.indkey) with ordinality k(attnum, n) on true"
            " join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum"
            " where i.indrelid = 'bar_checkpoints'::regclass and i.indisprimary order by k.n"
        ).fetchall()
        index = conn.execute(
            "select indexdef from pg_indexes where tablename = 'bars' and indexname = 'bars_interval_ts'"
        ).fetchone()
        view = conn.execute("select 1 from pg_views where viewname = 'bars_1w'").fetchone()
        tables = conn.execute(
            "select count(*) from pg_tables where tablename in ('bars', 'bar_checkpoints')"
        ).fetchone()
    assert [r[0] for r in primary_key] == ["instrument", "interval", "ts"]
    assert [r[0] for r in checkpoint_key] == ["app_id", "topic", "partition"]
    assert index is not None and '("interval", ts DESC)' in index[0]
    assert view is not None
    assert tables == (2,)


def test_migrate_twice_on_plain_postgres_creates_backfill_tables_and_deletable_candles_view(
    fresh_database: str,
) -> None:
    migrate(fresh_database)
    migrate(fresh_database)

    with psycopg.connect(fresh_database) as conn:
        tables = conn.execute(
            "select tablename from pg_tables"
            " where tablename in ('gaps', 'backfill_jobs', 'backfill_dead_letters') order by 1"
        ).fetchall()
        claim_index = conn.execute(
            "select indexdef from pg_indexes where indexname = 'backfill_jobs_claim'"
        ).fetchone()
        view = conn.execute(
            "select is_updatable from information_schema.views where table_name = 'candles_intraday'"
        ).fetchone()
        columns = conn.execute(
            "select column_name from information_schema.columns"
            " where table_name = 'candles_intraday' order by ordinal_position"
        ).fetchall()
    assert [r[0] for r in tables] == ["backfill_dead_letters", "backfill_jobs", "gaps"]
    assert claim_index is not None
    assert "(priority, created_at, id) WHERE (status = 'queued'::text)" in claim_index[0]
    assert view == ("YES",)
    assert [r[0] for r in columns] == ["symbol" if n == "instrument" else n for n in BAR_NAMES]


def test_migrate_gives_feed_outages_of_an_older_schema_their_kind(fresh_database: str) -> None:
    """A `feed_outages` table from before outages had a kind keeps its rows, each given the
    kind its detail names."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "create table feed_outages (source text not null, blind_since timestamptz not null,"
            " until timestamptz, detail text not null, primary key (source, blind_since))"
        )
        conn.execute(
            "insert into feed_outages values"
            " ('alpaca', '2025-03-12 15:00:30+00', null, 'disconnected: socket closed 1006'),"
            " ('alpaca', '2025-03-12 15:40:30+00', null, 'down: alpaca refused the key (401)')"
        )

    migrate(fresh_database)
    migrate(fresh_database)

    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute("select detail, kind from feed_outages order by blind_since").fetchall()
    assert rows == [
        ("disconnected: socket closed 1006", "disconnected"),
        ("down: alpaca refused the key (401)", "down"),
    ]


def test_migrate_cli_on_plain_postgres_says_plain(database_url: str) -> None:
    result = run_module(["streams", "db", "migrate"], {"MS_DATABASE_URL": database_url})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tables ready (plain PostgreSQL)"


async def test_weekly_view_daily_bars_yields_monday_weeks_with_first_open_and_last_close(
    database_url: str,
) -> None:
    writer = BarWriter(database_url)
    minute = bar("A", "1m", day_us(date(2024, 1, 2)), high=1000.0, low=0.001, volume=1000.0)
    try:
        assert await writer.write([*daily_bars(), minute]) == []
    finally:
        await writer.close()

    with psycopg.connect(database_url) as conn:
        found = weekly_rows(conn)

    expected = reference_weeks()
    assert_same_weeks(found, expected)
    # The week of 2024-01-01 spelled out, so the reference cannot hide a mistake.
    assert found[1][:7] == ("A", day_us(date(2024, 1, 1)), 11.0, 16.0, 10.0, 13.5, 8.5)
    assert found[1][7] == pytest.approx((4 * 11.5 + 0.5 * 14.5 + 1 * 14.0 + 3 * 13.0) / 8.5)
    assert found[1][8] == 17
    assert [(r[0], r[1]) for r in found] == [
        ("A", day_us(date(2023, 12, 25))),
        ("A", day_us(date(2024, 1, 1))),
        ("A", day_us(date(2024, 1, 8))),
        ("B", day_us(date(2024, 1, 1))),
    ]
    assert found[3][7] is None  # no volume, no vwap


async def test_weekly_view_session_time_zone_not_utc_yields_same_utc_weeks(
    database_url: str,
) -> None:
    # Bars are aligned to UTC days, and TimescaleDB's time_bucket('1 week') cuts weeks in UTC:
    # the view must not depend on the client's TimeZone setting.
    writer = BarWriter(database_url)
    try:
        assert await writer.write(daily_bars()) == []
    finally:
        await writer.close()

    with psycopg.connect(database_url, options="-c TimeZone=America/New_York") as conn:
        found = weekly_rows(conn)

    assert_same_weeks(found, reference_weeks())


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("1m=365", {"1m": 365}),
        ("1m=365,1s=7", {"1m": 365, "1s": 7}),
        (" 1m = 30 , 4h=1000 ,", {"1m": 30, "4h": 1000}),
        ("", {}),
    ],
)
def test_parse_retention_valid_pairs_yields_policy(text: str, policy: dict[str, int]) -> None:
    assert parse_retention(text) == policy


@pytest.mark.parametrize(
    "text",
    ["1x=3", "7m=3", "=5", "1m", "1m=", "1m=abc", "1m=1.5", "1m=365,1w=52", "1m=0", "1m=-3"],
)
def test_parse_retention_bad_pair_raises_config_error_naming_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="MS_SINK_RETENTION"):
        parse_retention(text)


def test_parse_retention_zero_days_says_keep_at_least_one_day() -> None:
    with pytest.raises(ConfigError, match="at least one day"):
        parse_retention("1h=0")


def old_and_new_rows() -> list[tuple[str, str, datetime]]:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    return [
        ("A", "1m", old),
        ("B", "1m", old - timedelta(days=1000)),
        ("A", "1m", recent),
        ("A", "1h", old),
        ("A", "1h", recent),
        ("A", "1d", old - timedelta(days=1000)),
    ]


def test_apply_retention_old_rows_of_configured_intervals_are_deleted(database_url: str) -> None:
    insert_rows(database_url, old_and_new_rows())

    deleted = apply_retention(database_url, "1m=30,1h=400")

    assert deleted == {"1m": 2, "1h": 0}
    assert remaining(database_url) == [("A", "1d"), ("A", "1h"), ("A", "1h"), ("A", "1m")]


def test_retention_cli_deletes_old_1m_rows_and_prints_counts(database_url: str) -> None:
    insert_rows(database_url, old_and_new_rows())

    result = run_module(
        ["streams", "db", "retention"],
        {"MS_DATABASE_URL": database_url, "MS_SINK_RETENTION": "1m=30"},
    )

    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout.strip().splitlines()[-1]) == {"deleted": {"1m": 2}}
    assert remaining(database_url) == [("A", "1d"), ("A", "1h"), ("A", "1h"), ("A", "1m")]


def test_retention_cli_bad_policy_exits_2_naming_variable(database_url: str) -> None:
    insert_rows(database_url, old_and_new_rows())

    result = run_module(
        ["streams", "db", "retention"],
        {"MS_DATABASE_URL": database_url, "MS_SINK_RETENTION": "1m=0"},
    )

    assert result.returncode == 2
    assert "MS_SINK_RETENTION" in result.stderr and "Traceback" not in result.stderr
    assert len(remaining(database_url)) == 6
