"""The backfill queue in PostgreSQL: gaps, jobs and dead letters, shared by any number of workers.

A job is the span [start, end) of one instrument and interval to fetch again. A worker `claim`s
the most urgent due job (lowest priority, then oldest) with `for update skip locked`, so no two
workers take the same one, and ends it with `complete`, `retry_later` or `fail`; `fail` moves it
to `backfill_dead_letters` with every attempt's error, and `requeue_dead_letter` queues it
again. A span has at most one open (queued or running) job. Times are microseconds since the
Unix epoch here, timestamptz in the tables. Each function commits its work unless the caller
holds a transaction, which then owns it; a lost connection raises TransientError.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from shared.backfill.jobs import (
    SMALLINT,
    TIER_PRIORITY,
    AttemptError,
    DeadLetterJob,
    GapStatus,
    Job,
    JobStatus,
    RecordedGap,
    dead_letter_from_row,
    job_from_row,
    maybe_time_of,
    priority_for_tier,
    tier_of,
)
from shared.errors import NotFoundError, TransientError
from shared.intervals import parse_interval
from shared.models import Gap
from shared.times import time_of

__all__ = [
    "AttemptError",
    "DeadLetterJob",
    "GapStatus",
    "Job",
    "JobStatus",
    "RecordedGap",
    "claim",
    "complete",
    "enqueue",
    "fail",
    "heartbeat",
    "list_dead_letters",
    "oldest_age_s",
    "priority_for_tier",
    "queue_depth",
    "reclaim_stale",
    "record_gap",
    "requeue_dead_letter",
    "retry_later",
    "tier_of",
]

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]
Cursor = psycopg.AsyncCursor[dict[str, Any]]

OPEN_JOB: Final = "status in ('queued', 'running')"
NOW: Final = "coalesce(%(now)s::timestamptz, now())"  # the caller's clock, or the database's

_GAP_KEY: Final = (
    "instrument = %(instrument)s and interval = %(interval)s"
    " and start_ts = %(start)s and end_ts = %(end)s"
)
INSERT_GAP_SQL: Final = """
insert into gaps (instrument, interval, start_ts, end_ts, cause, tier, provider, detail, detected_at)
values (%(instrument)s, %(interval)s, %(start)s, %(end)s, %(cause)s, %(tier)s, %(provider)s,
        %(detail)s, %(detected_at)s)
on conflict (instrument, interval, start_ts, end_ts) do nothing
returning id, status
"""
REOPEN_GAP_SQL: Final = f"""
update gaps set status = 'open', cause = %(cause)s, tier = %(tier)s, provider = %(provider)s,
    detail = %(detail)s, detected_at = %(detected_at)s, updated_at = now()
where {_GAP_KEY} and status in ('repaired', 'failed')
returning id, status
"""
FIND_GAP_SQL: Final = f"select id, status from gaps where {_GAP_KEY}"
MARK_GAP_SQL: Final = (
    "update gaps set status = %(status)s, updated_at = now() where id = %(gap_id)s"
)
# A gap fails only when no other job of it is still open (a requeued one, say).
FAIL_GAP_SQL: Final = f"""
update gaps set status = 'failed', updated_at = now()
where id = %(gap_id)s
  and not exists (select 1 from backfill_jobs where gap_id = %(gap_id)s and {OPEN_JOB})
"""

_JOB_COLUMNS: Final = (
    "id, gap_id, instrument, interval, start_ts, end_ts, priority, provider, status, attempts,"
    " next_attempt_at, claimed_by, claimed_at, last_error, errors, created_at"
)
ENQUEUE_SQL: Final = f"""
insert into backfill_jobs
    (gap_id, instrument, interval, start_ts, end_ts, priority, provider, next_attempt_at)
values (%(gap_id)s, %(instrument)s, %(interval)s, %(start)s, %(end)s, %(priority)s, %(provider)s,
    coalesce(%(not_before)s, now()))
on conflict (instrument, interval, start_ts, end_ts) where {OPEN_JOB} do update set
    priority = least(backfill_jobs.priority, excluded.priority),
    gap_id = coalesce(backfill_jobs.gap_id, excluded.gap_id),
    provider = coalesce(backfill_jobs.provider, excluded.provider),
    updated_at = now()
returning id
"""
CLAIM_SQL: Final = f"""
update backfill_jobs set status = 'running', claimed_by = %(worker)s, claimed_at = {NOW},
    attempts = attempts + 1, updated_at = now()
where id = (
    select id from backfill_jobs
    where status = 'queued' and next_attempt_at <= {NOW}
    order by priority, created_at, id
    limit 1
    for update skip locked
)
returning {_JOB_COLUMNS}
"""
COMPLETE_SQL: Final = """
update backfill_jobs set status = 'done', updated_at = now()
where id = %(id)s and status = 'running' and (%(worker)s::text is null or claimed_by = %(worker)s)
returning gap_id
"""


def _error_entry(at: str, error: str) -> str:
    """SQL appending one attempt's error to a job's `errors` (the row's values before the update)."""
    return (
        "errors || jsonb_build_array(jsonb_build_object("
        f"'attempt', attempts, 'at', {at}, 'worker', claimed_by, 'error', {error}))"
    )


RETRY_SQL: Final = f"""
update backfill_jobs set status = 'queued',
    next_attempt_at = now() + make_interval(secs => %(backoff_s)s),
    last_error = %(error)s, errors = {_error_entry("now()", "%(error)s::text")},
    claimed_by = null, claimed_at = null, updated_at = now()
where id = %(id)s and status = 'running' and (%(worker)s::text is null or claimed_by = %(worker)s)
returning id
"""
FAIL_SQL: Final = f"""
with failed as (
    update backfill_jobs set status = 'failed', last_error = %(error)s,
        errors = {_error_entry("now()", "%(error)s::text")}, updated_at = now()
    where id = %(id)s and status = 'running' and (%(worker)s::text is null or claimed_by = %(worker)s)
    returning id, gap_id, instrument, interval, start_ts, end_ts, priority, provider, attempts,
        errors
)
insert into backfill_dead_letters
    (job_id, gap_id, instrument, interval, start_ts, end_ts, priority, provider, attempts, errors)
select id, gap_id, instrument, interval, start_ts, end_ts, priority, provider, attempts, errors
from failed
returning id, gap_id, instrument, interval
"""
_STALE_ERROR: Final = (
    "format('reclaimed: %%s gave no answer for %%s s', claimed_by, %(older_than_s)s::text)"
)
RECLAIM_SQL: Final = f"""
update backfill_jobs set status = 'queued', next_attempt_at = {NOW},
    last_error = {_STALE_ERROR}, errors = {_error_entry(NOW, _STALE_ERROR)},
    claimed_by = null, claimed_at = null, updated_at = now()
where status = 'running' and claimed_at < {NOW} - make_interval(secs => %(older_than_s)s)
returning id, instrument, interval, last_error
"""
HEARTBEAT_SQL: Final = f"""
update backfill_jobs set claimed_at = {NOW}, updated_at = now()
where id = %(id)s and status = 'running' and claimed_by = %(worker)s
"""
_DEAD_LETTER_COLUMNS: Final = (
    "id, job_id, gap_id, instrument, interval, start_ts, end_ts, priority, provider, attempts,"
    " errors, failed_at, requeued_at, requeued_job_id"
)
LOCK_DEAD_LETTER_SQL: Final = (
    f"select {_DEAD_LETTER_COLUMNS} from backfill_dead_letters where id = %(id)s for update"
)
MARK_REQUEUED_SQL: Final = (
    "update backfill_dead_letters set requeued_at = now(), requeued_job_id = %(job_id)s"
    " where id = %(id)s"
)
LIST_DEAD_LETTERS_SQL: Final = f"""
select {_DEAD_LETTER_COLUMNS} from backfill_dead_letters
where %(include_requeued)s or requeued_at is null
order by failed_at desc, id desc
limit %(limit)s
"""
DEPTH_SQL: Final = f"select priority, count(*) as n from backfill_jobs where {OPEN_JOB} group by 1"
OLDEST_SQL: Final = f"""
select priority, greatest(0, extract(epoch from {NOW} - min(created_at)))::float8 as age_s
from backfill_jobs where {OPEN_JOB} group by 1
"""


def _span(instrument: str, interval: str, start_us: int, end_us: int) -> dict[str, Any]:
    """The key parameters of a span; raise ValueError for a bad interval or an empty span."""
    parse_interval(interval)
    if not start_us < end_us:
        raise ValueError(f"{instrument} {interval}: span [{start_us}, {end_us}) is empty")
    return {
        "instrument": instrument,
        "interval": interval,
        "start": time_of(start_us),
        "end": time_of(end_us),
    }


@contextlib.asynccontextmanager
async def _transaction(conn: Connection) -> AsyncIterator[Cursor]:
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
            yield cursor
    except psycopg.OperationalError as exc:
        raise TransientError(f"backfill queue: {exc}") from exc


async def _one(cursor: Cursor, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    await cursor.execute(query, params)
    return await cursor.fetchone()


async def record_gap(conn: Connection, gap: Gap, *, reopen: bool = False) -> RecordedGap:
    """Insert `gap` with status open, or find the same gap (instrument, interval, span).

    With `reopen`, a repaired or failed gap found again is opened again with the new cause and
    detail (a sweep finding a hole once repaired); otherwise it is left as it is. Raise
    ValueError for a bad interval or an empty span.
    """
    params = _span(gap.instrument, gap.interval, gap.start_us, gap.end_us) | {
        "cause": str(gap.cause),
        "tier": gap.tier,
        "provider": gap.provider,
        "detail": gap.detail,
        "detected_at": time_of(gap.detected_at_us),
    }
    async with _transaction(conn) as cursor:
        if row := await _one(cursor, INSERT_GAP_SQL, params):
            return RecordedGap(row["id"], GapStatus(row["status"]), inserted=True)
        row = await _one(cursor, REOPEN_GAP_SQL, params) if reopen else None
        row = row or await _one(cursor, FIND_GAP_SQL, params)
    assert row is not None  # the insert conflicted with it
    return RecordedGap(row["id"], GapStatus(row["status"]), inserted=False)


async def _enqueue(cursor: Cursor, params: dict[str, Any]) -> int:
    row = await _one(cursor, ENQUEUE_SQL, params)
    assert row is not None  # inserted, or the open job of the span updated
    if params["gap_id"] is not None:
        await cursor.execute(MARK_GAP_SQL, {"gap_id": params["gap_id"], "status": "queued"})
    job_id: int = row["id"]
    return job_id


async def enqueue(
    conn: Connection,
    *,
    instrument: str,
    interval: str,
    start_us: int,
    end_us: int,
    priority: int,
    provider: str | None = None,
    gap_id: int | None = None,
    not_before_us: int | None = None,
) -> int:
    """Queue a job for the span and return its id; mark the gap `gap_id` queued, if given.
    `not_before_us`: not to be claimed before then (default: now).

    If the span already has an open job, return that one, raised to the higher priority, with
    the gap and provider filled in where it had none. Raise ValueError for a bad interval, an
    empty span or a priority outside smallint.
    """
    if priority not in SMALLINT:
        raise ValueError(
            f"priority {priority} is outside smallint, {SMALLINT.start}..{SMALLINT.stop - 1}"
        )
    params = _span(instrument, interval, start_us, end_us) | {
        "priority": priority,
        "provider": provider,
        "gap_id": gap_id,
        "not_before": maybe_time_of(not_before_us),
    }
    async with _transaction(conn) as cursor:
        return await _enqueue(cursor, params)


async def claim(conn: Connection, worker_id: str, now_us: int | None = None) -> Job | None:
    """Take the most urgent due job (lowest priority, then oldest) for `worker_id`, or None.

    The job becomes running, claimed by the worker at `now_us` (default: the database's clock),
    with one more attempt; jobs other workers are claiming at the same moment are skipped.
    """
    async with _transaction(conn) as cursor:
        row = await _one(cursor, CLAIM_SQL, {"worker": worker_id, "now": maybe_time_of(now_us)})
    return None if row is None else job_from_row(row)


async def heartbeat(
    conn: Connection, job_id: int, worker_id: str, now_us: int | None = None
) -> bool:
    """Tell the queue `worker_id` is still on the job, so `reclaim_stale` leaves it; return
    False if the job is no longer this worker's (reclaimed, or ended)."""
    async with _transaction(conn) as cursor:
        await cursor.execute(
            HEARTBEAT_SQL, {"id": job_id, "worker": worker_id, "now": maybe_time_of(now_us)}
        )
        return cursor.rowcount == 1


async def complete(conn: Connection, job_id: int, *, worker_id: str | None = None) -> bool:
    """Mark a running job done and its gap repaired; return False if the job was not running
    (or, with `worker_id`, no longer that worker's: reclaimed and claimed by another)."""
    async with _transaction(conn) as cursor:
        row = await _one(cursor, COMPLETE_SQL, {"id": job_id, "worker": worker_id})
        if row is not None and row["gap_id"] is not None:
            await cursor.execute(MARK_GAP_SQL, {"gap_id": row["gap_id"], "status": "repaired"})
    return row is not None


async def retry_later(
    conn: Connection,
    job_id: int,
    error: str,
    backoff_s: float,
    *,
    worker_id: str | None = None,
) -> bool:
    """Put a running job back in the queue, due in `backoff_s`, with `error` appended to its
    errors; return False if the job was not running (or, with `worker_id`, not its)."""
    params = {"id": job_id, "error": error, "backoff_s": backoff_s, "worker": worker_id}
    async with _transaction(conn) as cursor:
        await cursor.execute(RETRY_SQL, params)
        return cursor.rowcount == 1


async def fail(
    conn: Connection, job_id: int, error: str, *, worker_id: str | None = None
) -> int | None:
    """Fail a running job for good: append `error`, copy it with all its errors into
    backfill_dead_letters and fail its gap (unless another job of the gap is still open).

    Return the dead letter's id, or None if the job was not running (or, with `worker_id`,
    not that worker's).
    """
    async with _transaction(conn) as cursor:
        row = await _one(cursor, FAIL_SQL, {"id": job_id, "error": error, "worker": worker_id})
        if row is None:
            return None
        if row["gap_id"] is not None:
            await cursor.execute(FAIL_GAP_SQL, {"gap_id": row["gap_id"]})
    log.warning(
        "backfill job %d (%s %s) failed for good: %s",
        job_id,
        row["instrument"],
        row["interval"],
        error,
    )
    dead_letter_id: int = row["id"]
    return dead_letter_id


async def requeue_dead_letter(conn: Connection, dlq_id: int) -> int:
    """Queue a dead letter's span again as a new job (attempts 0) and return the job's id.

    Requeueing the same dead letter again returns the same job. Raise NotFoundError if there
    is no dead letter `dlq_id`.
    """
    async with _transaction(conn) as cursor:
        row = await _one(cursor, LOCK_DEAD_LETTER_SQL, {"id": dlq_id})
        if row is None:
            raise NotFoundError(f"no backfill dead letter {dlq_id}")
        if row["requeued_job_id"] is not None:
            job_id: int = row["requeued_job_id"]
            return job_id
        job_id = await _enqueue(
            cursor,
            {k: row[k] for k in ("instrument", "interval", "priority", "provider", "gap_id")}
            | {"start": row["start_ts"], "end": row["end_ts"], "not_before": None},
        )
        await cursor.execute(MARK_REQUEUED_SQL, {"id": dlq_id, "job_id": job_id})
    return job_id


async def list_dead_letters(
    conn: Connection, limit: int = 100, *, include_requeued: bool = False
) -> list[DeadLetterJob]:
    """The latest `limit` dead letters, newest first; those requeued only if asked."""
    async with _transaction(conn) as cursor:
        await cursor.execute(
            LIST_DEAD_LETTERS_SQL, {"limit": limit, "include_requeued": include_requeued}
        )
        return [dead_letter_from_row(row) for row in await cursor.fetchall()]


async def queue_depth(conn: Connection) -> dict[str, int]:
    """Open (queued or running) jobs per tier (`tier_of` their priority); every tier is there,
    0 when drained."""
    depth = dict.fromkeys(TIER_PRIORITY, 0)
    async with _transaction(conn) as cursor:
        await cursor.execute(DEPTH_SQL)
        for row in await cursor.fetchall():
            depth[tier_of(row["priority"])] = row["n"]
    return depth


async def oldest_age_s(conn: Connection, now_us: int | None = None) -> dict[str, float]:
    """Seconds since the oldest open job of each tier was queued at `now_us` (default: the
    database's clock); every tier is there, 0.0 when drained."""
    ages = dict.fromkeys(TIER_PRIORITY, 0.0)
    async with _transaction(conn) as cursor:
        await cursor.execute(OLDEST_SQL, {"now": maybe_time_of(now_us)})
        for row in await cursor.fetchall():
            ages[tier_of(row["priority"])] = row["age_s"]
    return ages


async def reclaim_stale(
    conn: Connection, older_than_s: float, now_us: int | None = None
) -> list[int]:
    """Queue again, due now, the running jobs claimed (or last heartbeat) more than
    `older_than_s` before `now_us` (default: the database's clock): their workers died. The
    reclaim is recorded in each job's errors; return their ids."""
    async with _transaction(conn) as cursor:
        await cursor.execute(
            RECLAIM_SQL, {"older_than_s": older_than_s, "now": maybe_time_of(now_us)}
        )
        rows = await cursor.fetchall()
    for row in rows:
        log.warning(
            "backfill job %d (%s %s) %s",
            row["id"],
            row["instrument"],
            row["interval"],
            row["last_error"],
        )
    return [row["id"] for row in rows]
