"""BarWriter on the real PostgreSQL: exact round trip, highest revision wins, refused rows, outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.errors import TransientError
from shared.models import Bar
from streams.embedded.ports import free_port
from streams.sink.copy import BAR_COLUMNS, COLUMNS
from streams.sink.timescale import BarWriter

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
MINUTE_US = 60_000_000
SELECT = f"select {', '.join(COLUMNS)} from bars order by instrument, interval, ts"


def bar(
    instrument: str = "A",
    interval: str = "1m",
    ts_us: int = T0,
    revision: int = 0,
    **values: object,
) -> Bar:
    fields: dict[str, object] = dict(
        open=1.0,
        high=2.0,
        low=0.5,
        close=1.5,
        volume=10.0,
        vwap=1.25,
        trade_count=3,
        buy_volume=6.0,
        sell_volume=4.0,
        source="test",
        ts_event_us=ts_us + 1,
        ts_recv_us=ts_us + 2,
    )
    fields |= values
    return Bar(instrument, interval, ts_us, revision, **fields)  # type: ignore[arg-type]


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def stored(url: str) -> list[Bar]:
    """Every row of `bars` as a Bar, timestamps as UTC microseconds."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(SELECT).fetchall()
    return [
        Bar(i, n, micros(ts), rev, *values, source, micros(ev), micros(rv), seq)  # type: ignore[call-arg]
        for i, n, ts, rev, *values, source, ev, rv, seq in rows
    ]


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[BarWriter]:
    bar_writer = BarWriter(database_url)
    yield bar_writer
    await bar_writer.close()


async def test_writer_batch_reads_back_exact_values_and_utc_microseconds(
    writer: BarWriter, database_url: str
) -> None:
    bars = [
        bar(
            "A",
            "1m",
            T0 + 123_457,
            7,
            open=0.1,
            high=1e300,
            low=-5e-324,
            close=1 / 3,
            volume=123456.789012345,
            vwap=2.2250738585072014e-308,
            trade_count=2**62,
            buy_volume=0.0,
            sell_volume=-0.5,
            source="coinbase",
            ts_event_us=T0 + 999_999,
            ts_recv_us=T0 + 1_000_001,
        ),
        bar("B", "1s", -1, 0, ts_event_us=-1_000_001, ts_recv_us=-999_999),
        bar(
            "C",
            "1d",
            -86_400_000_000 * 365 * 100 - 7,
            2,
            ts_event_us=-62_135_596_800_000_000,
            ts_recv_us=253_402_300_799_999_999,
        ),
        bar("D", "1h", 0, 1, trade_count=0, ts_event_us=0, ts_recv_us=1),
    ]

    refused = await writer.write(bars)

    assert refused == []
    assert stored(database_url) == bars


async def test_writer_pre_1970_timestamp_is_stored_as_that_utc_instant(
    writer: BarWriter, database_url: str
) -> None:
    await writer.write([bar("A", "1s", -1), bar("B", "1s", -1_500_000)])

    with psycopg.connect(database_url) as conn:
        texts = conn.execute(
            "select to_char(ts at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') from bars order by 1"
        ).fetchall()
    assert texts == [("1969-12-31 23:59:58.500000",), ("1969-12-31 23:59:59.999999",)]


async def test_writer_same_key_twice_in_batch_keeps_highest_revision(
    writer: BarWriter, database_url: str
) -> None:
    batch = [bar(revision=1, close=1.0), bar(revision=3, close=3.0), bar(revision=2, close=2.0)]

    refused = await writer.write(batch)

    assert refused == []
    assert stored(database_url) == [batch[1]]


async def test_writer_lower_revision_later_does_not_overwrite_higher(
    writer: BarWriter, database_url: str
) -> None:
    await writer.write([bar(revision=5, close=5.0), bar("B", revision=2, close=2.0)])

    refused = await writer.write([bar(revision=4, close=4.0), bar("B", revision=3, close=3.0)])

    assert refused == []
    assert stored(database_url) == [bar(revision=5, close=5.0), bar("B", revision=3, close=3.0)]


async def test_writer_later_seq_replaces_a_revised_bar_and_its_replay_changes_nothing(
    writer: BarWriter, database_url: str
) -> None:
    live = bar(revision=2, close=1.0, seq=41, source="alpaca")  # revised twice by late trades
    await writer.write([live])

    backfilled = bar(revision=0, close=1.75, seq=57, source="backfill:12")  # whole history
    await writer.write([backfilled])
    await writer.write([live, bar(revision=3, close=9.0, seq=40, source="alpaca")])  # replays

    assert stored(database_url) == [backfilled]


async def test_writer_equal_revision_replaces_and_replay_changes_nothing(
    writer: BarWriter, database_url: str
) -> None:
    await writer.write([bar(revision=2, close=1.0), bar(ts_us=T0 + MINUTE_US, revision=1)])

    await writer.write([bar(revision=2, close=2.0)])
    after_equal = stored(database_url)
    await writer.write([bar(revision=2, close=2.0), bar(ts_us=T0 + MINUTE_US, revision=1)])

    assert after_equal == [bar(revision=2, close=2.0), bar(ts_us=T0 + MINUTE_US, revision=1)]
    assert stored(database_url) == after_equal


async def test_writer_rows_database_refuses_are_returned_and_others_written(
    writer: BarWriter, database_url: str
) -> None:
    await writer.write([bar("E", revision=9, close=9.0)])
    nul = bar("B\x00C")
    too_many = bar("D", trade_count=2**63)  # beyond bigint
    batch = [
        bar("A", revision=3, close=3.0),
        nul,
        bar("A", revision=1, close=1.0),
        bar("C"),
        too_many,
        bar("E", revision=8, close=8.0),
    ]

    refused = await writer.write(batch)

    assert [b for b, _ in refused] == [nul, too_many]
    assert "NUL" in refused[0][1]
    assert "out of range" in refused[1][1]
    assert stored(database_url) == [
        bar("A", revision=3, close=3.0),
        bar("C"),
        bar("E", revision=9, close=9.0),
    ]


async def test_writer_timestamp_beyond_python_datetime_is_refused_and_others_written(
    writer: BarWriter, database_url: str
) -> None:
    # A nanosecond timestamp taken for microseconds: year 55969, which Python's datetime cannot
    # hold. Such a row can never be written as is; it must come back refused, not raise.
    nanoseconds = bar("B", ts_us=T0 * 1000)

    refused = await writer.write([bar("A"), nanoseconds, bar("C")])

    assert [b for b, _ in refused] == [nanoseconds]
    assert stored(database_url) == [bar("A"), bar("C")]


async def test_writer_after_refused_batch_next_batch_is_merged(
    writer: BarWriter, database_url: str
) -> None:
    await writer.write([bar("A\x00"), bar("B")])

    refused = await writer.write([bar("C", revision=2), bar("C", revision=1, close=0.0)])

    assert refused == []
    assert stored(database_url) == [bar("B"), bar("C", revision=2)]


async def test_writer_unreachable_database_raises_transient_error() -> None:
    writer = BarWriter(f"postgresql://postgres@127.0.0.1:{free_port()}/marketstream")

    with pytest.raises(TransientError):
        await writer.write([bar()])
    await writer.close()


async def test_writer_connection_killed_raises_transient_error_then_reconnects(
    writer: BarWriter, database_url: str
) -> None:
    await writer.write([bar("A")])
    with psycopg.connect(database_url, autocommit=True) as conn:
        killed = conn.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            " and backend_type = 'client backend'"
        ).fetchone()
    assert killed == (1,)

    with pytest.raises(TransientError):
        await writer.write([bar("B")])
    refused = await writer.write([bar("B")])

    assert refused == []
    assert stored(database_url) == [bar("A"), bar("B")]


def test_bar_columns_name_every_column_of_the_migrated_table_with_its_type(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        table = conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = 'bars'::regclass and attnum > 0 and not attisdropped"
            " order by attnum"
        ).fetchall()
    names = {
        "text": "text",
        "int4": "integer",
        "int8": "bigint",
        "float8": "double precision",
        "timestamptz": "timestamp with time zone",
    }

    assert table == [(column, names[pg_type]) for column, pg_type in BAR_COLUMNS]
