"""`GET /health/detailed`: what an operator checks first, and one verdict.

The broker and the database with their response times, consumer lag per group and partition,
the backfill queue, the process's memory, and `status`: `down` (503) when the broker or the
database cannot be reached; `degraded` (200) when a partition's lag passes
MS_API_HEALTH_MAX_LAG messages, the oldest open T0 backfill job passes
MS_API_HEALTH_MAX_BACKFILL_AGE_S, or the lag or the queue cannot be read; else `healthy` (200).
Each part runs concurrently, bounded by MS_API_HEALTH_CHECK_TIMEOUT_S, so a slow broker cannot
hang the endpoint. `GET /health` stays the cheap readiness probe.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from aiohttp import web
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.cli import reason
from shared.kafka_admin import PartitionLag

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKFILL_TIER: Final = "T0"  # the tier whose oldest job the backfill SLO bounds


class HealthSettings(BaseSettings):
    """Thresholds of `GET /health/detailed` and the groups whose lag it reports."""

    model_config = SettingsConfigDict(env_prefix="MS_API_HEALTH_", extra="forbid")

    # A Kafka message is a batch of up to MS_KAFKA_BATCH_MAX_TRADES trades, so 1000 messages
    # behind on one partition is far more than a healthy worker ever lets pile up.
    max_lag: int = Field(1000, ge=0)
    # The SLO: the oldest open T0 backfill job is under 15 minutes old.
    max_backfill_age_s: float = Field(900.0, ge=0)
    # Group ids; a group also counts when its id starts with one of them and a dot (a worker
    # running a subset of agents: `marketstream.sink_bars`). The default is the worker's app id.
    groups: str = "marketstream"
    check_timeout_s: float = Field(2.0, gt=0, le=60)

    def wants(self, group: str) -> bool:
        """Whether `group` is one of ours."""
        names = [n.strip() for n in self.groups.split(",") if n.strip()]
        return any(group == n or group.startswith(f"{n}.") for n in names)


class Status(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"


# A provider in these states serves nothing (a connector's session down, a breaker open).
PROVIDER_DOWN: Final = frozenset({"down", "open"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one part of the check found: its value, or why it has none; how long it took."""

    value: Any
    response_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    reasons: tuple[str, ...]


def assess(
    *,
    broker: Outcome,
    database: Outcome,
    lags: Outcome,
    backfill_ages_s: Outcome,
    max_lag: int,
    max_backfill_age_s: float,
    providers: Outcome | None = None,
) -> Verdict:
    """Judge the parts: `lags.value` is a sequence of PartitionLag, `backfill_ages_s.value` the
    oldest open job's age (seconds) per tier. Down beats degraded; every reason is listed."""
    down = [
        f"{name} unreachable" + ("" if o.error == "unreachable" else f": {o.error}")
        for name, o in (("broker", broker), ("database", database))
        if not o.ok
    ]
    degraded = []
    if not lags.ok and broker.ok:
        degraded.append(f"consumer lag unknown: {lags.error}")
    rows: Sequence[PartitionLag] = (lags.value or ()) if lags.ok else ()
    for row in rows:
        if row.lag is not None and row.lag > max_lag:
            degraded.append(
                f"group {row.group} is {row.lag} messages behind on {row.topic}[{row.partition}]"
                f" (more than {max_lag})"
            )
    if not backfill_ages_s.ok and database.ok:
        degraded.append(f"backfill queue unknown: {backfill_ages_s.error}")
    age = (backfill_ages_s.value or {}).get(BACKFILL_TIER, 0.0) if backfill_ages_s.ok else 0.0
    if age > max_backfill_age_s:
        degraded.append(
            f"oldest open {BACKFILL_TIER} backfill job is {age:.0f} s old"
            f" (more than {max_backfill_age_s:g} s)"
        )
    for row in (providers.value or ()) if providers is not None and providers.ok else ():
        if row.get("state") in PROVIDER_DOWN:
            degraded.append(f"provider {row['provider']} of {row['process']} is {row['state']}")
    if down:
        return Verdict(Status.DOWN, tuple(down + degraded))
    return Verdict(Status.DEGRADED if degraded else Status.HEALTHY, tuple(degraded))


async def timed(name: str, work: Callable[[], Awaitable[T]], timeout_s: float) -> Outcome:
    """Run `work` within `timeout_s`; a failure or a timeout is the outcome, not an error.

    The outcome says only "unreachable" or "no answer": the endpoint takes no key, and an
    exception's text names hosts, ports and users. The log has it.
    """
    start = time.perf_counter()
    try:
        value = await asyncio.wait_for(work(), timeout_s)
        error = None
    except TimeoutError:
        value, error = None, f"no answer within {timeout_s:g} s"
    except Exception as exc:  # a failing dependency is the answer, not a crash
        log.warning("health check %s failed: %s: %s", name, type(exc).__name__, reason(exc))
        value, error = None, "unreachable"
    return Outcome(value, round((time.perf_counter() - start) * 1000, 1), error)


def rss_bytes() -> int:
    """The process's resident set size; its peak where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _part(outcome: Outcome, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {"ok": outcome.ok, "response_ms": outcome.response_ms}
    if outcome.error is not None:
        body["error"] = outcome.error
    return body | (fields if outcome.ok else {})


def _lag_row(row: PartitionLag) -> dict[str, object]:
    return {
        "group": row.group,
        "topic": row.topic,
        "partition": row.partition,
        "committed": row.committed,
        "end": row.end,
        "lag": row.lag,
        "members": row.members,  # who they are (hosts, ids): `streams groups describe`
    }


def body_of(
    verdict: Verdict,
    parts: Mapping[str, Outcome],
    settings: HealthSettings,
    memory_rss_bytes: int,
) -> dict[str, object]:
    """The JSON body: the verdict, then each part with its response time."""
    lags: Sequence[PartitionLag] = parts["consumer_lag"].value or ()
    queue = parts["backfill"].value or {}
    return {
        "status": str(verdict.status),
        "component": "api",
        "reasons": list(verdict.reasons),
        "checks": {
            "kafka": _part(parts["kafka"]),
            "database": _part(parts["database"]),
            "consumer_lag": _part(
                parts["consumer_lag"],
                max_lag=settings.max_lag,
                partitions=[_lag_row(r) for r in lags],
            ),
            "backfill": _part(
                parts["backfill"],
                max_age_s=settings.max_backfill_age_s,
                depth=queue.get("depth"),
                oldest_age_s=queue.get("oldest_age_s"),
            ),
        },
        "providers": _part(parts["providers"], providers=parts["providers"].value or []),
        "memory": {"rss_bytes": memory_rss_bytes},
    }


def add_detailed_health_route(
    app: web.Application,
    bootstrap: str,
    database_url: str,
    settings: HealthSettings,
    providers: Callable[[], Awaitable[list[dict[str, object]]]],
) -> None:
    """Serve `GET /health/detailed` on `app`; `providers` asks the connectors' providers."""
    import psycopg
    from confluent_kafka.admin import AdminClient

    from shared import kafka_admin
    from shared.backfill import queue
    from shared.status import json_response

    timeout_s = settings.check_timeout_s
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "marketstream-health"})

    async def broker() -> None:
        await asyncio.to_thread(admin.list_topics, timeout=timeout_s)

    async def lags() -> list[PartitionLag]:
        def ours() -> list[PartitionLag]:
            rows = kafka_admin.group_lags(bootstrap, None, timeout_s)
            return [r for r in rows if settings.wants(r.group)]

        return await asyncio.to_thread(ours)

    async def connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            database_url, connect_timeout=max(1, round(timeout_s)), autocommit=True
        )

    async def database() -> None:
        async with await connect() as conn:
            await conn.execute("select 1")

    async def backfill() -> dict[str, dict[str, Any]]:
        async with await connect() as conn:
            return {
                "depth": await queue.queue_depth(conn),
                "oldest_age_s": await queue.oldest_age_s(conn),
            }

    async def detailed(_: web.Request) -> web.Response:
        names = ("kafka", "database", "consumer_lag", "backfill", "providers")
        outcomes = await asyncio.gather(
            *(
                timed(name, work, timeout_s)
                for name, work in zip(
                    names, (broker, database, lags, backfill, providers), strict=True
                )
            )
        )
        parts = dict(zip(names, outcomes, strict=True))
        verdict = assess(
            broker=parts["kafka"],
            database=parts["database"],
            lags=parts["consumer_lag"],
            backfill_ages_s=Outcome(
                (parts["backfill"].value or {}).get("oldest_age_s"),
                parts["backfill"].response_ms,
                parts["backfill"].error,
            ),
            max_lag=settings.max_lag,
            max_backfill_age_s=settings.max_backfill_age_s,
            providers=parts["providers"],
        )
        if verdict.status is not Status.HEALTHY:
            log.info("health %s: %s", verdict.status, "; ".join(verdict.reasons))
        body = body_of(verdict, parts, settings, rss_bytes())
        return json_response(body, 503 if verdict.status is Status.DOWN else 200)

    app.router.add_get("/health/detailed", detailed)
