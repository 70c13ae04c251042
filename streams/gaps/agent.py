"""The `detect_gaps` agents: holes in the bars, recorded, published and queued for backfill.

`detect_gaps` reads md.bars.batch.v1 (the bars as the sink gets them) and hands each watched
interval's bars to the GapDetector, which knows the instrument's market and tier from the
latest `symbol_universe` (reloaded every UNIVERSE_RELOAD_S; an instrument outside it is
expected nothing). A hole becomes a Gap: `disconnect` if its feed reported being blind over it
(`feed_outages`, which `track_feed_outages` keeps from md.feed_events.v1), `provider_error` if
the feed went down there (the provider refused it for good: a revoked key, a plan without the
data), else `silence`. A gap is recorded once in `gaps`; only a new one goes to md.gaps.v1 and
into the backfill queue, with its tier's priority. Input is acknowledged after that, so a
crash finds the same gaps again and the table deduplicates them. Both live in the database,
so any number of replicas agree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import faust
import numpy as np
import psycopg
from aiohttp import web

from shared.backfill import queue
from shared.dead_letters import DeadLetterPublisher
from shared.errors import ConfigError, DecodeError, TransientError
from shared.intervals import parse_intervals
from shared.metrics import (
    BACKFILL_OLDEST_AGE,
    BACKFILL_QUEUE_DEPTH,
    GAPS_FOUND,
    SLO_GAP_VIOLATION_RATE,
)
from shared.models import BarBatch, FeedEvent, Gap, GapCause, InstrumentStatus
from shared.postgres import ReusedConnection
from shared.settings import BACKFILL_SOURCE_PREFIX, load_settings
from shared.status import json_response
from shared.times import micros_of, time_of
from shared.topics import GAPS
from streams.app import Worker, manual_acks, retry_until_done
from streams.gaps.detector import GapDetector, Hole, Profile, excuse_halts
from streams.gaps.expected import GapSettings, OutsideCalendarError, market_of
from streams.gaps.sweep import Cadence, sweep

log = logging.getLogger(__name__)

COMPONENT: Final = "worker.detect_gaps"
UNIVERSE_RELOAD_S: Final = 60.0
QUEUE_METRICS_S: Final = 5.0
UNIVERSE_SQL: Final = """
select symbol, exchange, asset_type, tier from symbol_universe
where active and version = (select max(version) from universe_versions)
"""
LATEST_SQL: Final = """
select k.instrument, k.interval, b.ts
from unnest(%s::text[], %s::text[], %s::timestamptz[]) as k (instrument, interval, before)
cross join lateral (
    select ts from bars
    where instrument = k.instrument and interval = k.interval and ts < k.before
    order by ts desc limit 1
) b
"""
BLIND_SQL: Final = """
select detail, kind from feed_outages
where source = %s and blind_since < %s and coalesce(until, 'infinity') > %s
order by kind = 'down' desc, blind_since limit 1
"""
# A session that failed and whose reconnect is then refused for good reports the same
# blind_since twice, `disconnected` then `down`: the outage becomes the provider's error.
OUTAGE_OPENED_SQL: Final = """
insert into feed_outages (source, blind_since, detail, kind) values (%s, %s, %s, %s)
on conflict (source, blind_since) do update set detail = excluded.detail, kind = excluded.kind
where excluded.kind = 'down'
"""
SWEEP_SQL: Final = """
select instrument, ts from bars
where interval = %s and instrument = any(%s) and ts >= %s and ts < %s
"""
SETTLE_US: Final = 120_000_000  # a window is judged once its bar had time to reach the database
HALTS_SQL: Final = """
select since, until from instrument_halts
where instrument = %s and since < %s and coalesce(until, 'infinity') > %s
"""
HALT_OPENED_SQL: Final = """
insert into instrument_halts (instrument, since, status, reason)
select %s, %s, %s, %s
where not exists (select 1 from instrument_halts where instrument = %s and until is null)
"""
HALT_CLOSED_SQL: Final = (
    "update instrument_halts set until = %s where instrument = %s and until is null"
)
OUTAGE_CLOSED_SQL: Final = "update feed_outages set until = %s where source = %s and until is null"


class Universe:
    """Each instrument's profile, from the latest symbol_universe; empty until one is loaded."""

    def __init__(self) -> None:
        self.profiles: dict[str, Profile] = {}
        self.loaded_at = -UNIVERSE_RELOAD_S

    async def refresh(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if time.monotonic() - self.loaded_at < UNIVERSE_RELOAD_S:
            return
        self.loaded_at = time.monotonic()
        try:
            rows = await (await connection.execute(UNIVERSE_SQL)).fetchall()
        except psycopg.errors.UndefinedTable:  # no universe loaded yet
            return
        profiles = {}
        for symbol, exchange, asset_type, tier in rows:
            try:
                profiles[symbol] = Profile(market_of(asset_type, exchange), tier)
            except ConfigError as exc:
                log.warning("no gaps judged for %s: %s", symbol, exc)
        self.profiles = profiles

    def get(self, instrument: str) -> Profile | None:
        return self.profiles.get(instrument)


class GapFinder:
    def __init__(self, worker: Worker, settings: GapSettings) -> None:
        self.worker = worker
        self.connection = ReusedConnection(worker.database_url, autocommit=True)
        self.dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)
        self.universe = Universe()
        self.intervals = dict(parse_intervals(settings.intervals))
        self.detector = GapDetector(self.intervals, settings, self.universe.get)
        self.settings = settings
        self.lock = asyncio.Lock()
        self.cadence: dict[tuple[str, str], Cadence] = {}
        self.last_sweep: dict[str, Any] | None = None

    async def bars(self, batch: BarBatch) -> int:
        """Observe the watched bars of a batch; return how many new gaps they revealed."""
        watched = [i for i, name in enumerate(batch.intervals) if name in self.intervals]
        rows = np.flatnonzero(np.isin(batch.interval_index, watched))
        if not rows.size:
            return 0
        rows = rows[np.argsort(batch.ts_us[rows], kind="stable")]
        keys = [
            (batch.instruments[batch.instrument_index[r]], batch.intervals[batch.interval_index[r]])
            for r in rows.tolist()
        ]
        async with self.lock:
            connection = await self.connection.get()
            await self.universe.refresh(connection)
            firsts: dict[tuple[str, str], int] = {}
            for key, r in zip(keys, rows.tolist(), strict=True):
                firsts.setdefault(key, int(batch.ts_us[r]))
            await self._learn(connection, firsts)
            # A failure below retries the whole batch: the detector's latest windows go back
            # to what they were, so the retry finds the same holes again.
            before = {key: self.detector.latest.get(key) for key in firsts}
            try:
                holes: list[Hole] = []
                for (instrument, interval), r in zip(keys, rows.tolist(), strict=True):
                    source = batch.sources[batch.source_index[r]]
                    if source.startswith(BACKFILL_SOURCE_PREFIX):
                        continue  # history filling a hole reveals none
                    try:
                        holes += self.detector.observe(
                            instrument, interval, int(batch.ts_us[r]), source
                        )
                    except (OutsideCalendarError, ValueError) as exc:
                        log.warning("%s %s bar not judged: %s", instrument, interval, exc)
                gaps = [
                    await self._blind(connection, part)
                    for hole in holes
                    for part in await self._unhalted(connection, hole)
                ]
                return await self._record(connection, gaps)
            except BaseException:
                for key, ts_us in before.items():
                    if ts_us is None:
                        self.detector.latest.pop(key, None)
                    else:
                        self.detector.latest[key] = ts_us
                raise

    async def _learn(
        self, connection: psycopg.AsyncConnection[Any], firsts: dict[tuple[str, str], int]
    ) -> None:
        """Ask the database for the latest bar before each key's first bar in the batch, for
        the keys the detector has not seen yet."""
        unknown = self.detector.unknown(list(firsts))
        unknown = [key for key in unknown if self.universe.get(key[0]) is not None]
        if not unknown:
            return
        instruments, intervals = zip(*unknown, strict=True)
        befores = [time_of(firsts[key]) for key in unknown]
        cursor = await connection.execute(LATEST_SQL, (list(instruments), list(intervals), befores))
        found = {(i, n): micros_of(ts) for i, n, ts in await cursor.fetchall()}
        self.detector.learn(found)

    async def _halts(
        self, connection: psycopg.AsyncConnection[Any], instrument: str, start_us: int, end_us: int
    ) -> list[tuple[int, int | None]]:
        cursor = await connection.execute(
            HALTS_SQL, (instrument, time_of(end_us), time_of(start_us))
        )
        return [
            (micros_of(since), None if until is None else micros_of(until))
            for since, until in await cursor.fetchall()
        ]

    async def _unhalted(self, connection: psycopg.AsyncConnection[Any], hole: Hole) -> list[Hole]:
        """The hole without the windows its instrument was halted in (one, some or none)."""
        halts = await self._halts(connection, hole.instrument, hole.start_us, hole.end_us)
        if not halts:
            return [hole]
        length = self.intervals[hole.interval]
        return [
            dataclasses.replace(hole, start_us=start, end_us=end)
            for start, end in excuse_halts(hole.start_us, hole.end_us, length, halts)
        ]

    async def _blind(self, connection: psycopg.AsyncConnection[Any], hole: Hole) -> Gap:
        """The hole as a Gap: a disconnect if its source reported being blind over it, a
        provider error if the provider refused it for good (the feed went down)."""
        blind = await (
            await connection.execute(
                BLIND_SQL, (hole.source, time_of(hole.end_us), time_of(hole.start_us))
            )
        ).fetchone()
        now_us = time.time_ns() // 1000
        return Gap(
            instrument=hole.instrument,
            interval=hole.interval,
            start_us=hole.start_us,
            end_us=hole.end_us,
            cause=(
                GapCause.SILENCE
                if not blind
                else GapCause.PROVIDER_ERROR
                if blind[1] == "down"
                else GapCause.DISCONNECT
            ),
            detail=(
                f"{hole.source} was blind: {blind[0]}"
                if blind
                else f"no {hole.interval} bar between {time_of(hole.before_us).isoformat()}"
                f" and {time_of(hole.after_us).isoformat()} where {hole.tier} expects them"
            ),
            detected_at_us=now_us,
            ts_recv_us=now_us,
            provider=hole.source,
            tier=hole.tier,
        )

    async def _record(self, connection: psycopg.AsyncConnection[Any], gaps: list[Gap]) -> int:
        """Record each gap once; publish and queue the new ones; return how many were new.

        A gap's row and its job commit together, after its record is on md.gaps.v1: a crash
        in between finds the gap again (still open, or not there) and finishes the work, so
        md.gaps.v1 may carry a gap twice, never no time.
        """
        new = 0
        for gap in gaps:
            async with connection.transaction():
                recorded = await queue.record_gap(connection, gap)
                if recorded.status != queue.GapStatus.OPEN:
                    continue  # queued, repaired or failed already: its work was done
                await queue.enqueue(
                    connection,
                    instrument=gap.instrument,
                    interval=gap.interval,
                    start_us=gap.start_us,
                    end_us=gap.end_us,
                    priority=queue.priority_for_tier(gap.tier),
                    gap_id=recorded.id,
                )
                self.worker.publisher.produce(
                    GAPS, self.worker.codec.encode_gap(gap), key=gap.instrument.encode()
                )
                await asyncio.to_thread(self.worker.publisher.flush)
            new += 1
            GAPS_FOUND.labels(gap.interval, gap.tier or "").inc()
            log.warning(
                "gap: %s %s [%s, %s) (%s, %s)",
                gap.instrument,
                gap.interval,
                time_of(gap.start_us).isoformat(),
                time_of(gap.end_us).isoformat(),
                gap.cause,
                gap.tier,
            )
        return new

    async def status(self, status: InstrumentStatus) -> None:
        """Keep when each instrument was halted: a halt opens one, trading again closes it."""
        async with self.lock:
            connection = await self.connection.get()
            at = time_of(status.ts_event_us)
            if status.halted:
                reason = " ".join(filter(None, (status.reason_code, status.reason)))
                await connection.execute(
                    HALT_OPENED_SQL,
                    (status.instrument, at, status.status, reason, status.instrument),
                )
            else:
                await connection.execute(HALT_CLOSED_SQL, (at, status.instrument))

    async def sweep(self) -> None:
        """Judge the stored bars of the horizon: record the holes before each instrument's
        latest bar (later ones are the stream detector's, once the feed is back) and set the
        continuity SLO over the whole horizon."""
        started = time.monotonic()
        now_us = time.time_ns() // 1000
        end_us = now_us - SETTLE_US
        start_us = end_us - round(self.settings.sweep_hours * 3_600_000_000)
        cadence: dict[tuple[str, str], Cadence] = {}
        gaps: list[Gap] = []
        async with self.lock:
            connection = await self.connection.get()
            await self.universe.refresh(connection)
            profiles = self.universe.profiles
            for interval, length in self.intervals.items():
                since_us = start_us - start_us % length  # the first window's start
                cursor = await connection.execute(
                    SWEEP_SQL, (interval, list(profiles), time_of(since_us), time_of(end_us))
                )
                seen: dict[str, list[int]] = {}
                for instrument, ts in await cursor.fetchall():
                    seen.setdefault(instrument, []).append(micros_of(ts))
                for instrument, profile in profiles.items():
                    starts = np.array(seen.get(instrument, []), dtype=np.int64)
                    swept = sweep(profile, length, starts, start_us, end_us, self.settings)
                    tally = cadence.setdefault((profile.tier, interval), Cadence())
                    tally.add(instrument, swept)
                    latest = int(starts.max()) if starts.size else start_us
                    for start, end in swept.spans:
                        # after the latest bar: the stream's; at the horizon's first window:
                        # it may begin before, and each sweep would see another start
                        if end > latest or start == swept.first_expected_us:
                            continue
                        halts = await self._halts(connection, instrument, start, end)
                        gaps += [
                            self._swept_gap(instrument, interval, profile.tier, s, e, now_us)
                            for s, e in excuse_halts(start, end, length, halts)
                        ]
            new = await self._record(connection, gaps)
        for (tier, interval), tally in cadence.items():
            SLO_GAP_VIOLATION_RATE.labels(tier, interval).set(tally.violation_rate)
        self.cadence = cadence
        self.last_sweep = {
            "at": time_of(now_us).isoformat(),
            "horizon": [time_of(start_us).isoformat(), time_of(end_us).isoformat()],
            "seconds": round(time.monotonic() - started, 3),
            "new_gaps": new,
        }

    @staticmethod
    def _swept_gap(
        instrument: str, interval: str, tier: str, start_us: int, end_us: int, now_us: int
    ) -> Gap:
        return Gap(
            instrument=instrument,
            interval=interval,
            start_us=start_us,
            end_us=end_us,
            cause=GapCause.SWEEP,
            detail="the sweep found no stored bars where the tier expects them",
            detected_at_us=now_us,
            ts_recv_us=now_us,
            tier=tier,
        )

    def cadence_stats(self) -> dict[str, Any]:
        """For GET /stats/cadence: expected against seen windows per tier and interval."""
        return {
            "schedule": {
                "every_s": self.settings.sweep_interval_s,
                "horizon_hours": self.settings.sweep_hours,
                "intervals": list(self.intervals),
                "last": self.last_sweep,
            },
            "cadence": [
                {
                    "tier": tier,
                    "interval": interval,
                    "instruments": tally.instruments,
                    "expected": tally.expected,
                    "seen": tally.seen,
                    "missing": tally.expected - tally.seen,
                    "gaps": tally.gaps,
                    "slo_gap_violation_rate": round(tally.violation_rate, 6),
                }
                for (tier, interval), tally in sorted(self.cadence.items())
            ],
        }

    async def feed_event(self, event: FeedEvent) -> None:
        """Keep where each feed was blind: a disconnect opens an outage, the first data after
        closes it."""
        async with self.lock:
            connection = await self.connection.get()
            if event.kind == "reconnected":
                await connection.execute(
                    OUTAGE_CLOSED_SQL, (time_of(event.ts_event_us), event.source)
                )
            else:
                since = event.blind_since_us or event.ts_event_us
                await connection.execute(
                    OUTAGE_OPENED_SQL,
                    (event.source, time_of(since), f"{event.kind}: {event.detail}", event.kind),
                )

    async def queue_metrics(self) -> None:
        async with self.lock:
            connection = await self.connection.get()
            for tier, depth in (await queue.queue_depth(connection)).items():
                BACKFILL_QUEUE_DEPTH.labels(tier).set(depth)
            for tier, age in (await queue.oldest_age_s(connection)).items():
                BACKFILL_OLDEST_AGE.labels(tier).set(age)


def install(worker: Worker) -> None:
    """Declare `detect_gaps`, `track_feed_outages` and the backfill queue's metrics timer."""
    finder = GapFinder(worker, load_settings(GapSettings))

    async def each(
        stream: faust.StreamT[bytes],
        what: str,
        decode: Callable[[bytes], Any],
        step: Callable[[Any], Awaitable[object]],
    ) -> None:
        """Decode each event (dead-lettering what does not decode), run its database step
        until it succeeds, then acknowledge it."""
        async for event in manual_acks(stream).events():
            try:
                value = decode(event.value)
            except DecodeError as exc:
                finder.dead_letters.reject_event(event, exc.reason, str(exc))
                await asyncio.to_thread(worker.publisher.flush)
            else:
                await retry_until_done(what, functools.partial(step, value))
            event.ack()

    @worker.app.agent(worker.bar_batches, name="detect_gaps")
    async def detect_gaps(stream: faust.StreamT[bytes]) -> None:
        await each(stream, "detect_gaps", worker.codec.decode_bar_batch, finder.bars)

    @worker.app.agent(worker.feed_events, name="track_feed_outages")
    async def track_feed_outages(stream: faust.StreamT[bytes]) -> None:
        await each(stream, "track_feed_outages", worker.codec.decode_feed_event, finder.feed_event)

    @worker.app.agent(worker.statuses, name="track_halts")
    async def track_halts(stream: faust.StreamT[bytes]) -> None:
        await each(stream, "track_halts", worker.codec.decode_instrument_status, finder.status)

    @worker.app.timer(interval=finder.settings.sweep_interval_s)
    async def sweep_gaps() -> None:
        try:
            await finder.sweep()
        except (psycopg.Error, TransientError) as exc:
            log.warning("the sweep could not read the database: %s", exc)

    async def cadence(_: web.Request) -> web.Response:
        return json_response(finder.cadence_stats())

    worker.status.router.add_get("/stats/cadence", cadence)

    @worker.app.timer(interval=QUEUE_METRICS_S)
    async def backfill_queue_metrics() -> None:
        try:
            await finder.queue_metrics()
        except (psycopg.Error, TransientError) as exc:
            log.warning("backfill queue metrics: %s", exc)
