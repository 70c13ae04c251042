"""The `sink_bars` agent: bars from Kafka into the `bars` table, acknowledged once committed.

It reads `md.bars.batch.v1`, the bars of each aggregation step in one message, not the one
message per bar of `md.bars.v1`: Faust costs tens of microseconds per event, which capped the
sink at about 10k bars/s. Batches stay numpy columns from Kafka to the COPY stream (no `Bar`
per row); they are buffered and written every `flush_interval_s` or `batch_rows` bars; input is
acknowledged to Faust only after its rows are committed (or dead-lettered), and a database
outage is retried with backoff without acknowledging anything, so nothing is lost across
outages and restarts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import faust

from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError, TransientError
from shared.intervals import parse_interval
from shared.metrics import BARS_SUNK, INGESTION_LAG, SINK_RETRIES, WRITE_BATCH_MS
from shared.models import Bar, BarBatch
from shared.settings import SinkSettings, load_settings
from shared.topics import BAR_BATCHES
from streams.app import Worker, manual_acks
from streams.sink.timescale import BarWriter

log = logging.getLogger(__name__)

COMPONENT = "worker.sink_bars"
BACKOFF_CAP_S = 30.0


class BarSink:
    def __init__(self, worker: Worker, settings: SinkSettings) -> None:
        self.worker = worker
        self.settings = settings
        self.writer = BarWriter(worker.database_url)
        self.dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)
        self.events: list[Any] = []
        self.buffer: list[BarBatch] = []
        self.latest_ends: dict[str, int] = {}  # by interval: the end of the latest bar stored
        self.rows = 0  # bars in `buffer`
        self.lock = asyncio.Lock()

    async def add(self, event: faust.EventT[bytes]) -> None:
        try:
            batch = self.worker.codec.decode_bar_batch(event.value)
        except DecodeError as exc:
            self.dead_letters.reject_event(event, "undecodable", str(exc))
            await asyncio.to_thread(self.worker.publisher.flush)
            event.ack()
            return
        self.events.append(event)
        self.buffer.append(batch)
        self.rows += len(batch)
        if self.rows >= self.settings.batch_rows:
            await self.flush()

    async def flush(self) -> None:
        """Write the buffer, retrying transient failures forever; then acknowledge its input."""
        async with self.lock:
            events, self.events = self.events, []
            taken, self.buffer = self.buffer, []
            rows, self.rows = self.rows, 0
            if not rows:
                for event in events:  # batches without bars
                    event.ack()
                return
            refused = await self._write_until_done(taken)
            for bar, reason in refused:
                self.dead_letters.publish(
                    reason="refused_by_database",
                    detail=reason,
                    # the refused bar alone, as this agent reads it: a replay after a fix
                    # (POST /ops/dlq/{id}/replay) merges it like any other
                    source=BAR_BATCHES,
                    payload=self.worker.codec.encode_bar_batch(BarBatch.from_bars([bar])),
                    key=bar.instrument.encode(),
                )
            if refused:
                await asyncio.to_thread(self.worker.publisher.flush)
            BARS_SUNK.inc(rows - len(refused))
            observe_ingestion_lag(taken, time.time_ns() // 1000, self.latest_ends)
            for event in events:
                event.ack()

    async def _write_until_done(self, batches: list[BarBatch]) -> list[tuple[Bar, str]]:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                refused = await self.writer.write_batches(batches)
                WRITE_BATCH_MS.observe((time.perf_counter() - started) * 1000)
                return refused
            except TransientError as exc:
                SINK_RETRIES.inc()
                delay = random.uniform(0, min(BACKOFF_CAP_S, 0.25 * 2**attempt))
                attempt += 1
                rows = sum(map(len, batches))
                log.warning("%s; retrying %d rows in %.1f s", exc, rows, delay)
                await asyncio.sleep(delay)


def observe_ingestion_lag(batches: list[BarBatch], now_us: int, ends: dict[str, int]) -> None:
    """Set ingestion_lag_seconds{interval}: now minus the end of the latest bar stored so far
    (`ends`, by interval, kept by the caller), so history written late (a backfill, a replay)
    does not read as lag."""
    for batch in batches:
        for k, name in enumerate(batch.intervals):
            starts = batch.ts_us[batch.interval_index == k]
            if starts.size:
                end = int(starts.max()) + parse_interval(name)
                ends[name] = max(ends.get(name, end), end)
    for name, end in ends.items():
        INGESTION_LAG.labels(name).set(max(0.0, (now_us - end) / 1e6))


def install(worker: Worker) -> None:
    """Declare `sink_bars` and its flush timer on the app."""
    sink = BarSink(worker, load_settings(SinkSettings))

    @worker.app.agent(worker.bar_batches, name="sink_bars")
    async def sink_bars(stream: faust.StreamT[bytes]) -> None:
        """Buffer bars; the timer or a full buffer writes them and acknowledges the input."""
        async for event in manual_acks(stream).events():
            await sink.add(event)

    @worker.app.timer(interval=sink.settings.flush_interval_s)
    async def flush_bars() -> None:
        await sink.flush()
