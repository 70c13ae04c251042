"""The `detect_gaps` agents: holes in the bars, recorded, published and queued for backfill.

`detect_gaps` reads md.bars.batch.v1 (the bars as the sink gets them) and hands each watched
interval's bars to the GapDetector, which knows the instrument's market and tier from the
latest `symbol_universe` (reloaded every UNIVERSE_RELOAD_S; an instrument outside it is
expected nothing). A hole becomes a Gap: `disconnect` if its feed reported being blind over it
(`feed_outages`, which `track_feed_outages` keeps from md.feed_events.v1), else `silence`. A gap
is recorded once in `gaps`; only a new one goes to md.gaps.v1 and into the backfill queue, with
its tier's priority. Input is acknowledged after that, so a crash finds the same gaps again and
the table deduplicates them. Both live in the database, so any number of replicas agree.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import faust
import numpy as np
import psycopg

from shared.backfill import queue
from shared.dead_letters import DeadLetterPublisher
from shared.errors import ConfigError, DecodeError, TransientError
from shared.intervals import parse_intervals
from shared.metrics import BACKFILL_OLDEST_AGE, BACKFILL_QUEUE_DEPTH, GAPS_FOUND
from shared.models import BarBatch, FeedEvent, Gap, GapCause
from shared.postgres import ReusedConnection
from shared.settings import load_settings
from shared.topics import GAPS
from streams.app import Worker, manual_acks
from streams.gaps.detector import GapDetector, Hole, Profile
from streams.gaps.expected import GapSettings, market_of

log = logging.getLogger(__name__)

COMPONENT: Final = "worker.detect_gaps"
UNIVERSE_RELOAD_S: Final = 60.0
QUEUE_METRICS_S: Final = 5.0
UNIVERSE_SQL: Final = """
select symbol, exchange, asset_type, tier from symbol_universe
where active and version = (select max(version) from universe_versions)
"""
LATEST_SQL: Final = """
select distinct on (instrument, interval) instrument, interval, ts from bars
where (instrument, interval) in (select * from unnest(%s::text[], %s::text[])) and ts < %s
order by instrument, interval, ts desc
"""
BLIND_SQL: Final = """
select detail from feed_outages
where source = %s and blind_since < %s and coalesce(until, 'infinity') > %s
order by blind_since limit 1
"""
OUTAGE_OPENED_SQL: Final = """
insert into feed_outages (source, blind_since, detail) values (%s, %s, %s)
on conflict (source, blind_since) do nothing
"""
OUTAGE_CLOSED_SQL: Final = "update feed_outages set until = %s where source = %s and until is null"


def _time(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


def _micros(at: datetime) -> int:
    return round(at.timestamp() * 1_000_000)


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
        self.lock = asyncio.Lock()

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
            await self._learn(connection, keys, int(batch.ts_us[rows[0]]))
            holes: list[Hole] = []
            for (instrument, interval), r in zip(keys, rows.tolist(), strict=True):
                source = batch.sources[batch.source_index[r]]
                holes += self.detector.observe(instrument, interval, int(batch.ts_us[r]), source)
            return await self._record(connection, holes)

    async def _learn(
        self,
        connection: psycopg.AsyncConnection[Any],
        keys: Iterable[tuple[str, str]],
        before_us: int,
    ) -> None:
        """Ask the database for the latest bar of the keys the detector has not seen yet."""
        unknown = self.detector.unknown(list(dict.fromkeys(keys)))
        unknown = [key for key in unknown if self.universe.get(key[0]) is not None]
        if not unknown:
            return
        instruments, intervals = zip(*unknown, strict=True)
        cursor = await connection.execute(
            LATEST_SQL, (list(instruments), list(intervals), _time(before_us))
        )
        found = {(i, n): _micros(ts) for i, n, ts in await cursor.fetchall()}
        self.detector.learn(found)

    async def _record(self, connection: psycopg.AsyncConnection[Any], holes: list[Hole]) -> int:
        new = 0
        now_us = time.time_ns() // 1000
        for hole in holes:
            blind = await (
                await connection.execute(
                    BLIND_SQL, (hole.source, _time(hole.end_us), _time(hole.start_us))
                )
            ).fetchone()
            gap = Gap(
                instrument=hole.instrument,
                interval=hole.interval,
                start_us=hole.start_us,
                end_us=hole.end_us,
                cause=GapCause.DISCONNECT if blind else GapCause.SILENCE,
                detail=(
                    f"{hole.source} was blind: {blind[0]}"
                    if blind
                    else f"no {hole.interval} bar between {_time(hole.before_us).isoformat()}"
                    f" and {_time(hole.after_us).isoformat()} where {hole.tier} expects them"
                ),
                detected_at_us=now_us,
                ts_recv_us=now_us,
                provider=hole.source,
                tier=hole.tier,
            )
            recorded = await queue.record_gap(connection, gap)
            if not recorded.inserted:
                continue
            new += 1
            GAPS_FOUND.labels(hole.interval, hole.tier).inc()
            self.worker.publisher.produce(
                GAPS, self.worker.codec.encode_gap(gap), key=hole.instrument.encode()
            )
            await queue.enqueue(
                connection,
                instrument=gap.instrument,
                interval=gap.interval,
                start_us=gap.start_us,
                end_us=gap.end_us,
                priority=queue.priority_for_tier(gap.tier),
                gap_id=recorded.id,
            )
            log.warning(
                "gap: %s %s [%s, %s) (%s, %s)",
                gap.instrument,
                gap.interval,
                _time(gap.start_us).isoformat(),
                _time(gap.end_us).isoformat(),
                gap.cause,
                gap.tier,
            )
        if new:
            await asyncio.to_thread(self.worker.publisher.flush)
        return new

    async def feed_event(self, event: FeedEvent) -> None:
        """Keep where each feed was blind: a disconnect opens an outage, the first data after
        closes it."""
        async with self.lock:
            connection = await self.connection.get()
            if event.kind == "reconnected":
                await connection.execute(
                    OUTAGE_CLOSED_SQL, (_time(event.ts_event_us), event.source)
                )
            else:
                since = event.blind_since_us or event.ts_event_us
                await connection.execute(
                    OUTAGE_OPENED_SQL, (event.source, _time(since), f"{event.kind}: {event.detail}")
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

    async def retrying(what: str, step: Any) -> None:
        """Run a database step until it succeeds: input is acknowledged only after it."""
        delay_s = 0.25
        while True:
            try:
                await step()
                return
            except (psycopg.OperationalError, TransientError) as exc:
                log.warning(
                    "%s: the database cannot answer (%s); retrying in %.1f s", what, exc, delay_s
                )
                await asyncio.sleep(delay_s)
                delay_s = min(30.0, 2 * delay_s)

    @worker.app.agent(worker.bar_batches, name="detect_gaps")
    async def detect_gaps(stream: faust.StreamT[bytes]) -> None:
        async for event in manual_acks(stream).events():
            try:
                batch = worker.codec.decode_bar_batch(event.value)
            except DecodeError as exc:
                finder.dead_letters.reject_event(event, exc.reason, str(exc))
                await asyncio.to_thread(worker.publisher.flush)
            else:
                await retrying("detect_gaps", functools.partial(finder.bars, batch))
            event.ack()

    @worker.app.agent(worker.feed_events, name="track_feed_outages")
    async def track_feed_outages(stream: faust.StreamT[bytes]) -> None:
        async for event in manual_acks(stream).events():
            try:
                feed_event = worker.codec.decode_feed_event(event.value)
            except DecodeError as exc:
                finder.dead_letters.reject_event(event, exc.reason, str(exc))
                await asyncio.to_thread(worker.publisher.flush)
            else:
                await retrying(
                    "track_feed_outages", functools.partial(finder.feed_event, feed_event)
                )
            event.ack()

    @worker.app.timer(interval=QUEUE_METRICS_S)
    async def backfill_queue_metrics() -> None:
        try:
            await finder.queue_metrics()
        except (psycopg.Error, TransientError) as exc:
            log.warning("backfill queue metrics: %s", exc)
