"""BarWriter.write_batches on the real PostgreSQL: BarBatch columns in, the highest revision
across batches kept, refused bars returned as Bars with the reason, the rest written."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import psycopg
import pytest
from live import MINUTE_US, RECV_1, RECV_2, T0, bar, bar_batch, read_bars

from shared.models import Bar
from shared.times import MAX_US, MIN_US
from streams.sink.timescale import BarWriter


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[BarWriter]:
    bar_writer = BarWriter(database_url)
    yield bar_writer
    await bar_writer.close()


def stored(url: str) -> list[Bar]:
    with psycopg.connect(url) as conn:
        return read_bars(conn)


async def test_write_batches_revisions_across_batches_keep_highest_and_return_refused(
    writer: BarWriter, database_url: str
) -> None:
    assert await writer.write([bar("AAPL", close=243.0), bar("MSFT", revision=4)]) == []
    step_1 = [
        bar("AAPL", revision=1, close=243.1),
        bar("株式-7203", close=2_841.5),
        bar("NANO", ts_us=T0 * 1000),  # nanoseconds taken for microseconds
        bar("MSFT", revision=3, close=1.0),  # lower than the stored 4: no change
    ]
    step_2 = [
        bar("AAPL", revision=2, close=243.2, ts_recv_us=RECV_2),
        bar("REV", revision=2**31, ts_recv_us=RECV_2),
        bar("株式-7203", ts_us=T0 + MINUTE_US, close=2_842.0, ts_recv_us=RECV_2),
    ]

    refused = await writer.write_batches([bar_batch(step_1), bar_batch(step_2, unused="TSLA")])

    assert refused == [
        (step_1[2], "ts is outside the years 1 to 9999"),
        (step_2[1], "revision is out of range for int4"),
    ]
    assert stored(database_url) == [step_2[0], bar("MSFT", revision=4), step_1[1], step_2[2]]


async def test_write_batches_replayed_change_nothing(writer: BarWriter, database_url: str) -> None:
    steps = [
        bar_batch([bar("AAPL"), bar("ÄPFEL", "5m", close=17.05)]),
        bar_batch([bar("AAPL", revision=1, close=243.5, ts_recv_us=RECV_2)]),
    ]
    await writer.write_batches(steps)
    first = stored(database_url)

    refused = await writer.write_batches(steps)
    refused += await writer.write_batches(steps[:1])  # an older step again, alone

    assert refused == []
    assert stored(database_url) == first
    assert [(b.instrument, b.revision) for b in first] == [("AAPL", 1), ("ÄPFEL", 0)]


async def test_write_batches_first_revisions_already_stored_are_merged_by_revision(
    writer: BarWriter, database_url: str
) -> None:
    # First revisions go straight into `bars`; when some are there already, as after a crash,
    # they are merged instead: equal revisions replace, lower ones change nothing.
    await writer.write_batches([bar_batch([bar("AAPL", revision=2, close=243.2), bar("MSFT")])])
    replayed = [
        bar("AAPL", close=243.0, ts_recv_us=RECV_2),
        bar("MSFT", close=480.15, ts_recv_us=RECV_2),
        bar("TSLA", close=412.3, ts_recv_us=RECV_2),
    ]

    refused = await writer.write_batches([bar_batch(replayed, unused="NVDA")])

    assert refused == []
    assert stored(database_url) == [bar("AAPL", revision=2, close=243.2), *replayed[1:]]


async def test_write_batches_no_bars_writes_nothing(writer: BarWriter, database_url: str) -> None:
    refused = await writer.write_batches([])

    assert refused == []
    assert stored(database_url) == []


async def test_write_batches_earliest_and_latest_valid_times_are_stored(
    writer: BarWriter, database_url: str
) -> None:
    earliest = bar("OLD", "1d", MIN_US, ts_event_us=MIN_US, ts_recv_us=MIN_US)
    latest = bar("LAST", "1s", MAX_US - 999_999, ts_event_us=MAX_US, ts_recv_us=MAX_US)

    refused = await writer.write_batches([bar_batch([earliest]), bar_batch([latest])])

    assert refused == []
    assert stored(database_url) == [latest, earliest]


async def test_write_batches_equal_revisions_in_one_write_later_row_wins(
    writer: BarWriter, database_url: str
) -> None:
    batch = [bar(revision=2, close=243.1), bar(revision=2, close=243.2), bar(revision=1)]

    await writer.write_batches([bar_batch(batch[:1]), bar_batch(batch[1:], unused="AAPL")])

    assert stored(database_url) == [batch[1]]


async def test_writer_nan_and_infinite_values_are_stored_as_they_are(
    writer: BarWriter, database_url: str
) -> None:
    halted = bar("HALT", volume=0.0, vwap=math.nan, high=math.inf, low=-math.inf)

    refused = await writer.write_batches([bar_batch([halted])])

    [back] = stored(database_url)
    assert refused == []
    assert math.isnan(back.vwap) and (back.high, back.low) == (math.inf, -math.inf)


async def test_writer_rows_a_check_constraint_refuses_are_returned_and_others_written(
    writer: BarWriter, database_url: str
) -> None:
    # A rule the database enforces and the sink does not know: the batch is halved until each
    # refused row is alone, and every other row is merged.
    batch = [bar(f"I{i:03d}", close=100.0 + i, ts_recv_us=RECV_1) for i in range(37)]
    negative = [17, 30]
    for i in negative:
        batch[i] = bar(f"I{i:03d}", volume=-1.0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("alter table bars add constraint volume_not_negative check (volume >= 0)")
    try:
        refused = await writer.write_batches([bar_batch(batch)])
        after = await writer.write_batches([bar_batch([bar("NEXT")])])
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("alter table bars drop constraint volume_not_negative")

    assert [b for b, _ in refused] == [batch[i] for i in negative]
    assert all("volume_not_negative" in reason for _, reason in refused)
    assert after == []
    kept = [b for i, b in enumerate(batch) if i not in negative]
    assert stored(database_url) == [*kept, bar("NEXT")]
