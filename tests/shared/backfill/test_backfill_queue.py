"""The backfill queue on the real PostgreSQL: claim order, concurrent workers, retries, the
dead-letter table and requeue, stale claims, gap dedupe, and the `candles_intraday` view."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from shared.backfill import queue
from shared.backfill.queue import GapStatus, JobStatus
from shared.errors import NotFoundError
from shared.models import Bar, Gap, GapCause
from streams.sink.timescale import BarWriter

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OPEN_US = 1_767_623_400_000_000  # 2026-01-05T14:30:00Z, Monday: 09:30 in New York
MINUTE_US = 60_000_000
SECOND_US = 1_000_000


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        yield c


def now_us() -> int:
    return time.time_ns() // 1000


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


async def enqueue_minutes(
    conn: psycopg.AsyncConnection[Any], instrument: str, minute: int, priority: int, **extra: Any
) -> int:
    """Queue the 1m span [open + minute, open + minute + 10 min) of `instrument`."""
    start = OPEN_US + minute * MINUTE_US
    return await queue.enqueue(
        conn,
        instrument=instrument,
        interval="1m",
        start_us=start,
        end_us=start + 10 * MINUTE_US,
        priority=priority,
        **extra,
    )


def outage(instrument: str = "AAPL", cause: GapCause = GapCause.DISCONNECT) -> Gap:
    return Gap(
        instrument=instrument,
        interval="1m",
        start_us=OPEN_US + 30 * MINUTE_US,
        end_us=OPEN_US + 40 * MINUTE_US,
        cause=cause,
        detail="alpaca closed the stream (1006)",
        detected_at_us=OPEN_US + 41 * MINUTE_US + 250_000,
        ts_recv_us=OPEN_US + 41 * MINUTE_US + 251_500,
        provider="alpaca",
        tier="T0",
    )


async def queued_outage(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    """Record the outage gap and queue its job; return (gap id, job id)."""
    gap = outage()
    recorded = await queue.record_gap(conn, gap)
    job_id = await queue.enqueue(
        conn,
        instrument=gap.instrument,
        interval=gap.interval,
        start_us=gap.start_us,
        end_us=gap.end_us,
        priority=queue.priority_for_tier(gap.tier),
        provider=gap.provider,
        gap_id=recorded.id,
    )
    return recorded.id, job_id


async def gap_status(conn: psycopg.AsyncConnection[Any], gap_id: int) -> str:
    row = await (await conn.execute("select status from gaps where id = %s", (gap_id,))).fetchone()
    assert row is not None
    return str(row[0])


async def job_status(conn: psycopg.AsyncConnection[Any], job_id: int) -> str:
    query = "select status from backfill_jobs where id = %s"
    row = await (await conn.execute(query, (job_id,))).fetchone()
    assert row is not None
    return str(row[0])


# --- enqueue and claim ------------------------------------------------------------------------


async def test_claim_jobs_of_two_tiers_come_lowest_priority_first_then_oldest(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange: each enqueue is its own transaction, so each later one is younger
    t2_old = await enqueue_minutes(conn, "ZVZZT", 0, priority=2)
    t0_old = await enqueue_minutes(conn, "AAPL", 0, priority=0)
    t2_new = await enqueue_minutes(conn, "ZVZZT", 10, priority=2)
    t0_new = await enqueue_minutes(conn, "MSFT", 0, priority=0)
    t1 = await enqueue_minutes(conn, "KO", 0, priority=1)

    # Act
    claimed = [await queue.claim(conn, "worker-1") for _ in range(6)]

    # Assert
    assert [job.id if job else None for job in claimed] == [
        t0_old,
        t0_new,
        t1,
        t2_old,
        t2_new,
        None,
    ]
    first = claimed[0]
    assert first is not None
    assert (first.instrument, first.interval, first.status, first.attempts) == (
        "AAPL",
        "1m",
        JobStatus.RUNNING,
        1,
    )
    assert (first.start_us, first.end_us) == (OPEN_US, OPEN_US + 10 * MINUTE_US)
    assert first.claimed_by == "worker-1" and first.tier == "T0"


async def test_enqueue_same_span_again_returns_the_open_job_at_the_higher_priority(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    first = await enqueue_minutes(conn, "AAPL", 0, priority=2)

    # Act
    again = await enqueue_minutes(conn, "AAPL", 0, priority=0, provider="alpaca")
    other_interval = await queue.enqueue(
        conn,
        instrument="AAPL",
        interval="5m",
        start_us=OPEN_US,
        end_us=OPEN_US + 10 * MINUTE_US,
        priority=2,
    )

    # Assert
    assert again == first and other_interval != first
    job = await queue.claim(conn, "worker-1")
    assert job is not None and job.id == first
    assert (job.priority, job.provider) == (0, "alpaca")
    assert await enqueue_minutes(conn, "AAPL", 0, priority=2) == first  # running: still open


async def test_enqueue_given_gap_marks_it_queued_and_complete_marks_it_repaired(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    gap_id, job_id = await queued_outage(conn)
    status_queued = await gap_status(conn, gap_id)
    job = await queue.claim(conn, "worker-1")
    assert job is not None and job.id == job_id and job.gap_id == gap_id

    # Act
    done = await queue.complete(conn, job_id)
    done_again = await queue.complete(conn, job_id)

    # Assert
    assert (status_queued, done, done_again) == ("queued", True, False)
    assert await gap_status(conn, gap_id) == "repaired"
    assert await job_status(conn, job_id) == "done"


@pytest.mark.parametrize(
    ("interval", "start_us", "end_us", "priority", "message"),
    [
        ("1m", OPEN_US, OPEN_US, 0, "empty"),
        ("1m", OPEN_US + MINUTE_US, OPEN_US, 0, "empty"),
        ("7m", OPEN_US, OPEN_US + MINUTE_US, 0, "divide a day"),
        ("1m", OPEN_US, OPEN_US + MINUTE_US, 40_000, "smallint"),
    ],
)
async def test_enqueue_bad_job_raises_value_error(
    conn: psycopg.AsyncConnection[Any],
    interval: str,
    start_us: int,
    end_us: int,
    priority: int,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        await queue.enqueue(
            conn,
            instrument="AAPL",
            interval=interval,
            start_us=start_us,
            end_us=end_us,
            priority=priority,
        )


# --- concurrent workers -----------------------------------------------------------------------


async def test_claim_while_another_worker_holds_a_job_skips_to_the_next_without_waiting(
    conn: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    # Arrange
    first = await enqueue_minutes(conn, "AAPL", 0, priority=0)
    second = await enqueue_minutes(conn, "MSFT", 0, priority=0)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        async with conn.transaction():  # worker 1 claims and has not committed yet
            held = await queue.claim(conn, "worker-1")

            # Act
            taken = await asyncio.wait_for(queue.claim(other, "worker-2"), timeout=10)
            nothing = await asyncio.wait_for(queue.claim(other, "worker-2"), timeout=10)

    # Assert
    assert held is not None and held.id == first
    assert taken is not None and taken.id == second
    assert nothing is None


async def test_claim_two_workers_draining_concurrently_share_no_job_and_take_all(
    conn: psycopg.AsyncConnection[Any], database_url: str
) -> None:
    # Arrange: 200 jobs in one transaction
    async with conn.transaction():
        ids = {
            await enqueue_minutes(conn, f"SYM{i % 40}", 10 * (i // 40), priority=i % 3)
            for i in range(200)
        }

    async def drain(c: psycopg.AsyncConnection[Any], worker: str) -> list[int]:
        taken = []
        while job := await queue.claim(c, worker):
            taken.append(job.id)
        return taken

    # Act
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as first,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as second,
    ):
        one, two = await asyncio.gather(drain(first, "worker-1"), drain(second, "worker-2"))

    # Assert
    assert len(ids) == 200
    assert set(one).isdisjoint(two)
    assert sorted(one + two) == sorted(ids)
    assert one and two  # both worked
    assert await queue.queue_depth(conn) == {"T0": 67, "T1": 67, "T2": 66}  # running: still open


# --- retries, failures, the dead-letter table ---------------------------------------------------


async def test_retry_later_hides_the_job_until_its_backoff_has_passed(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    job_id = await enqueue_minutes(conn, "AAPL", 30, priority=0)
    assert await queue.claim(conn, "worker-1") is not None
    before_us = now_us()

    # Act
    retried = await queue.retry_later(conn, job_id, "alpaca: HTTP 429 Too Many Requests", 60)
    early = await queue.claim(conn, "worker-2")
    due = await queue.claim(conn, "worker-2", now_us=now_us() + 61 * SECOND_US)

    # Assert
    assert retried is True and early is None
    assert due is not None and due.id == job_id
    assert due.attempts == 2 and due.claimed_by == "worker-2"
    assert due.next_attempt_us - before_us == pytest.approx(60 * SECOND_US, abs=5 * SECOND_US)
    assert due.last_error == "alpaca: HTTP 429 Too Many Requests"
    [error] = due.errors
    assert (error.attempt, error.worker, error.error) == (
        1,
        "worker-1",
        "alpaca: HTTP 429 Too Many Requests",
    )
    assert before_us - SECOND_US < error.at_us < now_us() + SECOND_US


async def test_fail_moves_the_job_to_dead_letters_with_every_error_and_fails_its_gap(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    gap_id, job_id = await queued_outage(conn)
    await queue.claim(conn, "worker-1")
    await queue.retry_later(conn, job_id, "alpaca: HTTP 500", 0)
    await queue.claim(conn, "worker-2")

    # Act
    dlq_id = await queue.fail(conn, job_id, "alpaca: HTTP 500 again; giving up after 2 attempts")
    again = await queue.fail(conn, job_id, "twice")

    # Assert
    assert dlq_id is not None and again is None
    [letter] = await queue.list_dead_letters(conn, 10)
    gap = outage()
    assert (letter.id, letter.job_id, letter.gap_id) == (dlq_id, job_id, gap_id)
    assert (letter.instrument, letter.interval, letter.start_us, letter.end_us) == (
        gap.instrument,
        gap.interval,
        gap.start_us,
        gap.end_us,
    )
    assert (letter.priority, letter.provider, letter.attempts) == (0, "alpaca", 2)
    assert [(e.attempt, e.worker, e.error) for e in letter.errors] == [
        (1, "worker-1", "alpaca: HTTP 500"),
        (2, "worker-2", "alpaca: HTTP 500 again; giving up after 2 attempts"),
    ]
    assert letter.errors[0].at_us <= letter.errors[1].at_us <= letter.failed_at_us
    assert letter.requeued_at_us is None and letter.requeued_job_id is None
    assert await job_status(conn, job_id) == "failed"
    assert await gap_status(conn, gap_id) == "failed"
    assert await queue.queue_depth(conn) == {"T0": 0, "T1": 0, "T2": 0}


async def test_requeue_dead_letter_makes_a_new_job_that_repairs_the_gap(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    gap_id, job_id = await queued_outage(conn)
    await queue.claim(conn, "worker-1")
    dlq_id = await queue.fail(conn, job_id, "alpaca: HTTP 503")
    assert dlq_id is not None

    # Act
    new_id = await queue.requeue_dead_letter(conn, dlq_id)
    same_id = await queue.requeue_dead_letter(conn, dlq_id)

    # Assert
    assert new_id != job_id and same_id == new_id
    assert await gap_status(conn, gap_id) == "queued"
    job = await queue.claim(conn, "worker-2")
    assert job is not None and job.id == new_id
    assert (job.gap_id, job.attempts, job.errors, job.priority) == (gap_id, 1, (), 0)
    assert await queue.complete(conn, new_id)
    assert await gap_status(conn, gap_id) == "repaired"
    assert await queue.list_dead_letters(conn, 10) == []
    [letter] = await queue.list_dead_letters(conn, 10, include_requeued=True)
    assert letter.requeued_job_id == new_id and letter.requeued_at_us is not None


async def test_requeue_unknown_dead_letter_raises_not_found(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    with pytest.raises(NotFoundError, match="424242"):
        await queue.requeue_dead_letter(conn, 424242)


async def test_fail_with_another_open_job_of_the_gap_leaves_the_gap_queued(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange: a second job of the same gap, say an operator's for part of its span
    gap_id, job_id = await queued_outage(conn)
    other = await queue.enqueue(
        conn,
        instrument="AAPL",
        interval="1m",
        start_us=OPEN_US + 30 * MINUTE_US,
        end_us=OPEN_US + 31 * MINUTE_US,
        priority=0,
        gap_id=gap_id,
    )
    first = await queue.claim(conn, "worker-1")
    assert first is not None and first.id == job_id != other

    # Act
    await queue.fail(conn, job_id, "alpaca: no bars for that span")

    # Assert
    assert await gap_status(conn, gap_id) == "queued"
    await queue.claim(conn, "worker-1")
    await queue.fail(conn, other, "alpaca: no bars for that span")
    assert await gap_status(conn, gap_id) == "failed"


# --- stale claims -------------------------------------------------------------------------------


async def test_reclaim_stale_requeues_the_job_of_a_worker_that_stopped_answering(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    job_id = await enqueue_minutes(conn, "AAPL", 30, priority=0)
    claimed = await queue.claim(conn, "worker-1")
    assert claimed is not None and claimed.claimed_at_us is not None

    # Act
    fresh = await queue.reclaim_stale(conn, 300)
    stale = await queue.reclaim_stale(conn, 300, now_us=claimed.claimed_at_us + 301 * SECOND_US)

    # Assert
    assert fresh == [] and stale == [job_id]
    assert not await queue.heartbeat(conn, job_id, "worker-1")
    job = await queue.claim(conn, "worker-2", now_us=claimed.claimed_at_us + 302 * SECOND_US)
    assert job is not None and job.id == job_id and job.attempts == 2
    [error] = job.errors
    assert (error.attempt, error.worker) == (1, "worker-1")
    assert error.error == "reclaimed: worker-1 gave no answer for 300 s"
    assert error.at_us == claimed.claimed_at_us + 301 * SECOND_US


async def test_a_worker_whose_job_was_reclaimed_cannot_end_it_for_the_next_one(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    job_id = await enqueue_minutes(conn, "AAPL", 30, priority=0)
    first = await queue.claim(conn, "worker-1")
    assert first is not None and first.claimed_at_us is not None
    later_us = first.claimed_at_us + 301 * SECOND_US
    assert await queue.reclaim_stale(conn, 300, now_us=later_us) == [job_id]
    assert await queue.claim(conn, "worker-2", now_us=later_us + SECOND_US) is not None

    # worker-1 wakes up and reports on the job it no longer has
    assert not await queue.complete(conn, job_id, worker_id="worker-1")
    assert not await queue.retry_later(conn, job_id, "late", 1.0, worker_id="worker-1")
    assert await queue.fail(conn, job_id, "late", worker_id="worker-1") is None

    assert await queue.complete(conn, job_id, worker_id="worker-2")


async def test_heartbeat_keeps_a_long_job_from_being_reclaimed(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    job_id = await enqueue_minutes(conn, "AAPL", 30, priority=0)
    claimed = await queue.claim(conn, "worker-1")
    assert claimed is not None and claimed.claimed_at_us is not None
    later_us = claimed.claimed_at_us + 200 * SECOND_US

    # Act
    alive = await queue.heartbeat(conn, job_id, "worker-1", now_us=later_us)
    reclaimed = await queue.reclaim_stale(conn, 300, now_us=later_us + 200 * SECOND_US)

    # Assert
    assert alive is True and reclaimed == []
    assert not await queue.heartbeat(conn, job_id, "worker-2")


# --- gaps ---------------------------------------------------------------------------------------


async def test_record_gap_detected_again_adds_no_row(conn: psycopg.AsyncConnection[Any]) -> None:
    # Arrange
    gap = outage()

    # Act
    first = await queue.record_gap(conn, gap)
    again = await queue.record_gap(conn, outage(cause=GapCause.SWEEP))
    other = await queue.record_gap(conn, outage(instrument="MSFT"))

    # Assert
    assert (first.inserted, again.inserted, other.inserted) == (True, False, True)
    assert again.id == first.id != other.id
    assert first.status == again.status == GapStatus.OPEN
    rows = await (
        await conn.execute(
            "select instrument, interval, start_ts, end_ts, cause, tier, provider, detail,"
            " detected_at, status from gaps order by id"
        )
    ).fetchall()
    assert len(rows) == 2
    instrument, interval, start, end, cause, tier, provider, detail, detected_at, status = rows[0]
    assert (instrument, interval, micros(start), micros(end)) == (
        "AAPL",
        "1m",
        gap.start_us,
        gap.end_us,
    )
    assert (cause, tier, provider, detail, status) == (
        "disconnect",
        "T0",
        "alpaca",
        gap.detail,
        "open",
    )
    assert micros(detected_at) == gap.detected_at_us


async def test_record_gap_reopen_opens_a_repaired_gap_found_again(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    gap_id, job_id = await queued_outage(conn)
    await queue.claim(conn, "worker-1")
    await queue.complete(conn, job_id)

    # Act
    kept = await queue.record_gap(conn, outage(cause=GapCause.SWEEP))
    reopened = await queue.record_gap(conn, outage(cause=GapCause.SWEEP), reopen=True)

    # Assert
    assert (kept.id, kept.status, kept.inserted) == (gap_id, GapStatus.REPAIRED, False)
    assert (reopened.id, reopened.status, reopened.inserted) == (gap_id, GapStatus.OPEN, False)
    row = await (await conn.execute("select cause from gaps where id = %s", (gap_id,))).fetchone()
    assert row == ("sweep",)


# --- metrics ------------------------------------------------------------------------------------


async def test_queue_depth_and_oldest_age_count_open_jobs_per_tier(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Arrange
    await enqueue_minutes(conn, "AAPL", 0, priority=0)
    await enqueue_minutes(conn, "AAPL", 10, priority=0)
    await enqueue_minutes(conn, "ZVZZT", 0, priority=2)
    manual = await enqueue_minutes(conn, "KO", 0, priority=7)
    await queue.claim(conn, "worker-1")  # running jobs are still in the queue
    done = await enqueue_minutes(conn, "MSFT", 0, priority=-1)  # done jobs are not
    urgent = await queue.claim(conn, "worker-1")
    assert urgent is not None and urgent.id == done
    await queue.complete(conn, done)
    row = await (
        await conn.execute("select created_at from backfill_jobs where id = %s", (manual,))
    ).fetchone()
    assert row is not None
    at_us = micros(row[0]) + 90 * SECOND_US

    # Act
    depth = await queue.queue_depth(conn)
    ages = await queue.oldest_age_s(conn, now_us=at_us)

    # Assert
    assert depth == {"T0": 2, "T1": 0, "T2": 1, "P7": 1}
    assert ages["T1"] == 0.0 and ages["P7"] == pytest.approx(90.0)
    assert ages["T0"] > ages["T2"] > ages["P7"]
    assert ages["T0"] < 90 + 60  # queued moments ago


@pytest.mark.parametrize(("tier", "priority"), [("T0", 0), ("T1", 1), ("T2", 2), (None, 2)])
def test_priority_for_tier_known_tier_gives_its_priority_and_back(
    tier: str | None, priority: int
) -> None:
    assert queue.priority_for_tier(tier) == priority
    assert queue.tier_of(priority) == (tier or "T2")


def test_priority_for_tier_unknown_tier_raises_value_error() -> None:
    with pytest.raises(ValueError, match="T3"):
        queue.priority_for_tier("T3")


# --- candles_intraday ---------------------------------------------------------------------------


def minute_bar(instrument: str, minute: int, price: float) -> Bar:
    ts_us = OPEN_US + minute * MINUTE_US
    return Bar(
        instrument=instrument,
        interval="1m",
        ts_us=ts_us,
        revision=0,
        open=price,
        high=price + 0.12,
        low=price - 0.08,
        close=price + 0.05,
        volume=1200.0 + minute,
        vwap=price + 0.02,
        trade_count=31 + minute,
        buy_volume=700.0,
        sell_volume=500.0 + minute,
        source="alpaca",
        ts_event_us=ts_us + 59_870_000,
        ts_recv_us=ts_us + 60_002_000,
        seq=minute + 1,
    )


@pytest.fixture
async def session_bars(database_url: str) -> list[Bar]:
    """The first 30 minutes of AAPL and MSFT 1m bars, and AAPL's first 5m bars, in `bars`."""
    bars = [
        minute_bar(symbol, m, price + m / 100)
        for symbol, price in (("AAPL", 243.1), ("MSFT", 418.2))
        for m in range(30)
    ]
    bars += [
        dataclasses.replace(minute_bar("AAPL", m, 243.1), interval="5m") for m in range(0, 30, 5)
    ]
    writer = BarWriter(database_url)
    try:
        assert await writer.write(bars) == []
    finally:
        await writer.close()
    return bars


async def test_candles_intraday_select_shows_bars_with_instrument_as_symbol(
    conn: psycopg.AsyncConnection[Any], session_bars: list[Bar]
) -> None:
    # Act
    rows = await (
        await conn.execute(
            "select symbol, interval, ts, open, high, low, close, volume, vwap, trade_count,"
            " source, revision from candles_intraday"
            " where symbol = %s and interval = '1m' and ts >= %s and ts < %s order by ts",
            (
                "AAPL",
                datetime(2026, 1, 5, 14, 30, tzinfo=UTC),
                datetime(2026, 1, 5, 15, tzinfo=UTC),
            ),
        )
    ).fetchall()

    # Assert
    expected = [b for b in session_bars if b.instrument == "AAPL" and b.interval == "1m"]
    assert [(r[0], r[1], micros(r[2])) for r in rows] == [("AAPL", "1m", b.ts_us) for b in expected]
    assert [r[3:] for r in rows] == [
        (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count, b.source, b.revision)
        for b in expected
    ]


async def test_candles_intraday_delete_of_a_10_minute_window_deletes_those_bars_only(
    conn: psycopg.AsyncConnection[Any], session_bars: list[Bar]
) -> None:
    # Arrange: the runbook's query, 09:40 to 09:50 New York time
    start = datetime(2026, 1, 5, 14, 40, tzinfo=UTC)
    end = start + timedelta(minutes=10)

    # Act
    deleted = await conn.execute(
        "delete from candles_intraday where symbol = %s and ts >= %s and ts < %s",
        ("AAPL", start, end),
    )

    # Assert
    gone = {
        (b.instrument, b.interval, b.ts_us)
        for b in session_bars
        if b.instrument == "AAPL" and micros(start) <= b.ts_us < micros(end)
    }
    assert deleted.rowcount == len(gone) == 12  # ten 1m bars and two 5m bars
    rows = await (await conn.execute("select instrument, interval, ts from bars")).fetchall()
    left = {(i, n, micros(ts)) for i, n, ts in rows}
    assert left == {(b.instrument, b.interval, b.ts_us) for b in session_bars} - gone
