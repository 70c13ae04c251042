"""The backfill queue's values: jobs, dead letters, statuses, and tiers as priorities.

Times are integer microseconds since the Unix epoch; `time_of` and `micros_of` convert them
exactly to and from the timestamptz values psycopg reads and writes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from shared.times import micros_of, time_of

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
TIER_PRIORITY: Final = {"T0": 0, "T1": 1, "T2": 2}  # lower is sooner
NO_TIER: Final = "T2"  # an instrument of no known tier is judged as the symbol universe does
SMALLINT: Final = range(-(2**15), 2**15)


class GapStatus(enum.StrEnum):
    OPEN = "open"
    QUEUED = "queued"
    REPAIRED = "repaired"
    FAILED = "failed"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AttemptError:
    """One failed attempt of a job: its number, when, on which worker, and the error."""

    attempt: int
    at_us: int
    worker: str | None
    error: str


@dataclass(frozen=True, slots=True)
class Job:
    """A span [start_us, end_us) of one instrument and interval to fetch again."""

    id: int
    gap_id: int | None
    instrument: str
    interval: str
    start_us: int
    end_us: int
    priority: int
    provider: str | None  # the provider to ask, if the caller named one
    status: JobStatus
    attempts: int  # claims so far, the current one included
    next_attempt_us: int
    claimed_by: str | None
    claimed_at_us: int | None
    last_error: str | None
    errors: tuple[AttemptError, ...]
    created_at_us: int

    @property
    def tier(self) -> str:
        return tier_of(self.priority)


@dataclass(frozen=True, slots=True)
class DeadLetterJob:
    """A job that failed for good, with every attempt's error (a row of backfill_dead_letters)."""

    id: int
    job_id: int | None
    gap_id: int | None
    instrument: str
    interval: str
    start_us: int
    end_us: int
    priority: int
    provider: str | None
    attempts: int
    errors: tuple[AttemptError, ...]
    failed_at_us: int
    requeued_at_us: int | None
    requeued_job_id: int | None


@dataclass(frozen=True, slots=True)
class RecordedGap:
    """A gap's row: its id and status, and whether this call inserted it."""

    id: int
    status: GapStatus
    inserted: bool


def priority_for_tier(tier: str | None) -> int:
    """The priority of a tier's jobs: T0 = 0 (soonest), T1 = 1, T2 = 2, no tier as T2.

    Raise ValueError for another tier.
    """
    try:
        return TIER_PRIORITY[tier or NO_TIER]
    except KeyError:
        raise ValueError(f"tier {tier!r} is not one of {', '.join(TIER_PRIORITY)}") from None


def tier_of(priority: int) -> str:
    """The tier a priority stands for, as metrics label it: T0, T1, T2, or P<n> for another."""
    for tier, tier_priority in TIER_PRIORITY.items():
        if priority == tier_priority:
            return tier
    return f"P{priority}"


def maybe_time_of(us: int | None) -> datetime | None:
    return None if us is None else time_of(us)


def maybe_micros_of(moment: datetime | None) -> int | None:
    return None if moment is None else micros_of(moment)


def attempt_errors(entries: list[dict[str, Any]]) -> tuple[AttemptError, ...]:
    """Read a job's `errors` JSON: objects with attempt, at (ISO 8601), worker and error."""
    return tuple(
        AttemptError(
            e["attempt"], micros_of(datetime.fromisoformat(e["at"])), e["worker"], e["error"]
        )
        for e in entries
    )


def job_from_row(row: dict[str, Any]) -> Job:
    """A `Job` from a backfill_jobs row read as a dict."""
    return Job(
        id=row["id"],
        gap_id=row["gap_id"],
        instrument=row["instrument"],
        interval=row["interval"],
        start_us=micros_of(row["start_ts"]),
        end_us=micros_of(row["end_ts"]),
        priority=row["priority"],
        provider=row["provider"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_us=micros_of(row["next_attempt_at"]),
        claimed_by=row["claimed_by"],
        claimed_at_us=maybe_micros_of(row["claimed_at"]),
        last_error=row["last_error"],
        errors=attempt_errors(row["errors"]),
        created_at_us=micros_of(row["created_at"]),
    )


def dead_letter_from_row(row: dict[str, Any]) -> DeadLetterJob:
    """A `DeadLetterJob` from a backfill_dead_letters row read as a dict."""
    return DeadLetterJob(
        id=row["id"],
        job_id=row["job_id"],
        gap_id=row["gap_id"],
        instrument=row["instrument"],
        interval=row["interval"],
        start_us=micros_of(row["start_ts"]),
        end_us=micros_of(row["end_ts"]),
        priority=row["priority"],
        provider=row["provider"],
        attempts=row["attempts"],
        errors=attempt_errors(row["errors"]),
        failed_at_us=micros_of(row["failed_at"]),
        requeued_at_us=maybe_micros_of(row["requeued_at"]),
        requeued_job_id=row["requeued_job_id"],
    )
