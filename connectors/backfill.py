"""`python -m connectors backfill`: drain the backfill queue through the same bar aggregation.

A worker claims a job, fetches the trades of its span from the provider's REST history and
publishes them to md.trades.v1 as a source of its own, `backfill:<job id>`, so the bar worker
folds them into every interval exactly as it folds a live feed. That source's bars replace the
live bars of every window it covers (bars are keyed by instrument, interval and start, whatever
their source), and a window it covered only in part would replace a complete live bar with a
partial one. So the fetch spans whole windows of the longest interval in MS_BARS_INTERVALS
(whole UTC days for the default 1d), and once the span is published a heartbeat two days past
it closes and releases every window the source opened. A window still in progress when the
fetch runs is emitted from what had traded, and replaced by the live feed's when it closes.

A retry is a source of its own too, `backfill:<job id>:<attempt>`: an attempt that failed
midway may have published part of the span, and folding the span again under that clock would
find its first trades too late and count the rest twice. Such an attempt's clock is left open:
closing it would emit its partial windows.

Outcomes: done once Kafka acknowledged every page and the closing heartbeat; a TransientError
(rate limits included), an unacknowledged message or a body that is not the provider's is
retried with backoff up to MS_BACKFILL_MAX_ATTEMPTS, then dead-lettered; a FatalError (a refused
key, another 4xx, no provider with trade history) is dead-lettered at once. SIGINT or SIGTERM
stops the loop; a job being fetched stays running, for reclaim_stale to queue again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
import signal
import socket
import time
from typing import Final

import psycopg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.alpaca import AlpacaConfig
from connectors.alpaca_history import (
    PROVIDER,
    AlpacaHistory,
    MalformedResponseError,
    RateLimitedError,
)
from connectors.backfill_plan import (
    CRYPTO_ASSET_TYPES,
    HISTORY_PROVIDERS,
    backfill_source,
    fetch_span,
    history_provider,
    retry_backoff_s,
)
from connectors.budget import Limit, Priority, RequestBudget
from connectors.event_clock import END_OF_STREAM_ADVANCE_US
from shared.backfill import queue
from shared.backfill.queue import Connection, Job
from shared.cli import EXIT_OK, require_broker, require_database
from shared.codec import Codec
from shared.errors import ConfigError, DeliveryError, FatalError, TransientError
from shared.metrics import BACKFILL_JOBS, BATCHES_PUBLISHED, TRADES_PUBLISHED, UP
from shared.models import TradeBatch
from shared.partitioning import partition_for
from shared.postgres import ReusedConnection
from shared.publisher import Publisher
from shared.settings import KafkaSettings
from shared.status import database_check, kafka_check, serve, status_app
from shared.times import rfc3339
from shared.topics import TRADES

log = logging.getLogger(__name__)

# A window is closed once its end, the bar worker's grace and the sink's flush have passed.
CLOSED_AFTER_US: Final = 120_000_000

COMPONENT: Final = "backfill"
# The instrument's latest row, active or not: a delisted name's history is still wanted.
UNIVERSE_ROW_SQL: Final = """
select providers, asset_type from symbol_universe where symbol = %s order by version desc limit 1
"""


class BackfillSettings(BaseSettings):
    """Settings of the backfill process (MS_BACKFILL_*); the provider's are MS_ALPACA_*."""

    model_config = SettingsConfigDict(env_prefix="MS_BACKFILL_", extra="forbid")

    worker_id: str = Field("", description="the name jobs are claimed under; empty: host:pid")
    poll_s: float = Field(1.0, gt=0, description="with nothing due, look again after this")
    max_attempts: int = Field(5, ge=1, description="attempts before a job is dead-lettered")
    backoff_base_s: float = Field(1.0, gt=0, description="the first retry's delay, doubled after")
    backoff_cap_s: float = Field(300.0, gt=0)
    heartbeat_s: float = Field(10.0, gt=0, description="tell the queue a job is alive this often")
    reclaim_after_s: float = Field(
        120.0, gt=0, description="a job silent this long: its worker died"
    )
    reclaim_every_s: float = Field(60.0, gt=0)
    page_limit: int = Field(10_000, ge=1, le=10_000, description="trades per history request")
    alpaca_requests_per_minute: int = Field(
        200, ge=1, description="this process's Alpaca budget (the free plan allows 200 a minute)"
    )
    delivery_timeout_s: float = Field(60.0, gt=0, description="Kafka's time to acknowledge a job")
    http_host: str = "127.0.0.1"
    http_port: int = Field(9201, ge=0, le=65535)
    log_level: str = "INFO"


class NoHistoryError(FatalError):
    """No provider of the instrument has trade history."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class BackfillWorker:
    """Claim jobs one at a time, publish each span's trades, and end each job in the queue."""

    def __init__(
        self,
        settings: BackfillSettings,
        *,
        worker_id: str,
        database_url: str,
        publisher: Publisher,
        codec: Codec,
        partitions: int,
        histories: dict[bool, AlpacaHistory],  # by crypto (True) or not
        window_us: int,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.publisher = publisher
        self.codec = codec
        self.partitions = partitions
        self.histories = histories
        self.window_us = window_us
        self._connection = ReusedConnection(database_url, autocommit=True)
        self._stopping = asyncio.Event()
        self._rng = random.Random()
        self._next_reclaim_s = 0.0

    def stop(self) -> None:
        """End the loop: now if idle; a job being fetched is left running for reclaim_stale."""
        self._stopping.set()

    async def run(self) -> None:
        """Work until `stop`; the queue being unreachable only delays the next claim."""
        try:
            while not self._stopping.is_set():
                try:
                    conn = await self._connection.get()
                    await self._reclaim(conn)
                    job = await queue.claim(conn, self.worker_id)
                except (TransientError, psycopg.OperationalError) as exc:
                    log.warning(
                        "backfill queue unavailable (%s); again in %g s", exc, self.settings.poll_s
                    )
                    await self._connection.close()
                    await self._idle()
                    continue
                if job is None:
                    await self._idle()
                    continue
                if job.attempts > self.settings.max_attempts:  # its workers died each time
                    error = f"claimed {job.attempts} times, never finished: its workers stopped"
                    try:
                        await queue.fail(conn, job.id, error, worker_id=self.worker_id)
                        BACKFILL_JOBS.labels("failed").inc()
                    except TransientError as exc:  # reclaimed and failed later, then
                        log.warning("backfill job %d: cannot fail it yet (%s)", job.id, exc)
                    continue
                await self._work(conn, job)
        finally:
            await self._connection.close()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.settings.poll_s)

    async def _reclaim(self, conn: Connection) -> None:
        """Requeue the jobs of workers gone silent (the queue logs each), at most every
        `reclaim_every_s`, between jobs: while this worker works, the idle ones do it."""
        if time.monotonic() >= self._next_reclaim_s:
            await queue.reclaim_stale(conn, self.settings.reclaim_after_s)
            self._next_reclaim_s = time.monotonic() + self.settings.reclaim_every_s

    async def _work(self, conn: Connection, job: Job) -> None:
        """Run one claimed job to its end in the queue (done, retried or failed), unless the
        process stops first or the job was taken from this worker."""
        source = backfill_source(job.id, job.attempts)
        started_s = time.monotonic()
        span = fetch_span(job.start_us, job.end_us, self.window_us)
        fetched_at_us = time.time_ns() // 1000
        what = (
            f"backfill job {job.id} ({job.instrument} {job.interval}"
            f" [{rfc3339(job.start_us)}, {rfc3339(job.end_us)}), attempt {job.attempts})"
        )
        try:
            provider, crypto = await self._plan(conn, job)
        except (NoHistoryError, TransientError) as exc:
            await self._end(conn, job, what, exc)
            return
        log.info(
            "%s: fetching [%s, %s) from %s as %s",
            what,
            rfc3339(span[0]),
            rfc3339(span[1]),
            provider,
            source,
        )
        beat_done = asyncio.Event()
        beating = asyncio.create_task(self._heartbeats(conn, job, beat_done))
        fetching = asyncio.create_task(
            self._publish_span(job, self.histories[crypto], source, span)
        )
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({fetching, beating, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not fetching.done():
                fetching.cancel()
            await asyncio.wait({fetching})  # its outcome is read below
            beat_done.set()
            owned = await beating  # never cancelled mid-query: it shares the connection
        if fetching.cancelled() or not owned:
            if owned:
                log.info("%s: stopped; the job is left running for reclaim_stale", what)
            else:
                log.warning("%s: the job is no longer this worker's; dropped", what)
            return
        failure = fetching.exception()
        if failure is not None and not isinstance(failure, Exception):
            raise failure  # SystemExit and the like end the process
        trades = 0 if failure is not None else fetching.result()
        await self._end(conn, job, what, failure, trades, started_s)
        if failure is None and span[1] + CLOSED_AFTER_US > fetched_at_us:
            await self._again_when_closed(conn, job, what, span[1])

    async def _again_when_closed(self, conn: Connection, job: Job, what: str, end_us: int) -> None:
        """The span reached past the fetch: its last windows were still open, and when they
        close the live feed's bars (without the outage's trades) replace the backfill's. So
        the same span is fetched again once they have closed, and that fetch's bars replace
        the live ones in turn."""
        due_us = end_us + CLOSED_AFTER_US
        try:
            again = await queue.enqueue(
                conn,
                instrument=job.instrument,
                interval=job.interval,
                start_us=job.start_us,
                end_us=job.end_us,
                priority=job.priority,
                provider=job.provider,
                gap_id=job.gap_id,
                not_before_us=due_us,
            )
        except TransientError as exc:
            log.error("%s: cannot queue its fetch after the span closes: %s", what, exc)
            return
        log.info(
            "%s: its span was still open; job %d fetches it again at %s",
            what,
            again,
            rfc3339(due_us),
        )

    async def _plan(self, conn: Connection, job: Job) -> tuple[str, bool]:
        """The provider to ask and whether the instrument is crypto; raise NoHistoryError."""
        try:
            row = await (await conn.execute(UNIVERSE_ROW_SQL, (job.instrument,))).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None  # no universe was ever loaded
        except psycopg.OperationalError as exc:
            raise TransientError(f"cannot read the symbol universe: {exc}") from exc
        providers: tuple[str, ...] = tuple(row[0]) if row else ()
        provider = history_provider(job.provider, providers)
        if provider is None:
            known = (
                f"its providers are {', '.join(providers)}"
                if row
                else "it is not in the symbol universe"
            )
            asked = f"; the job asks for {job.provider}" if job.provider else ""
            raise NoHistoryError(
                f"no provider with trade history for {job.instrument}: {known}{asked}"
                f" (trade history: {', '.join(HISTORY_PROVIDERS)})"
            )
        crypto = str(row[1]).lower() in CRYPTO_ASSET_TYPES if row else "/" in job.instrument
        return provider, crypto

    async def _publish_span(
        self, job: Job, history: AlpacaHistory, source: str, span: tuple[int, int]
    ) -> int:
        """Publish every page of the span's trades as `source`, then the heartbeat that closes
        its windows; return the trades Kafka acknowledged. Raise DeliveryError if it did not
        acknowledge them all, and what the history raises."""
        partition = partition_for(job.instrument, self.partitions)
        key = job.instrument.encode()
        acked = [0]
        since = self.publisher.mark()  # a refusal before this job is not this job's
        published = watermark_us = 0
        async for page in history.trades(job.instrument, *span):
            watermark_us = max(watermark_us, int(page.ts_event_us.max()))
            batch = dataclasses.replace(
                page, source=source, provider=PROVIDER, watermark_us=watermark_us
            )
            self._produce(batch, partition, key, acked)
            published += len(batch)
        if published:  # no trades, no windows to close
            closing = TradeBatch.heartbeat(source, span[1] + END_OF_STREAM_ADVANCE_US)
            self._produce(closing, partition, key, acked)
        await self.publisher.settled(
            self.publisher.mark(), self.settings.delivery_timeout_s, since=since
        )
        return acked[0]

    def _produce(self, batch: TradeBatch, partition: int, key: bytes, acked: list[int]) -> None:
        self.publisher.produce(
            TRADES,
            self.codec.encode_trade_batch(batch),
            key=key,
            partition=partition,
            on_ack=functools.partial(self._acked, acked, len(batch)),
        )

    @staticmethod
    def _acked(acked: list[int], trades: int) -> None:
        if trades:
            acked[0] += trades
            TRADES_PUBLISHED.labels(COMPONENT).inc(trades)
            BATCHES_PUBLISHED.labels(COMPONENT).inc()

    async def _heartbeats(self, conn: Connection, job: Job, done: asyncio.Event) -> bool:
        """Keep the job claimed until `done`; return False as soon as it is not this worker's."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.settings.heartbeat_s)
                return True
            try:
                if not await queue.heartbeat(conn, job.id, self.worker_id):
                    return False
            except (TransientError, psycopg.Error) as exc:
                log.warning("backfill job %d: heartbeat failed (%s); going on", job.id, exc)

    async def _end(
        self,
        conn: Connection,
        job: Job,
        what: str,
        exc: BaseException | None,
        trades: int = 0,
        started_s: float | None = None,
    ) -> None:
        """Record the job's outcome, if it is still this worker's. A queue that cannot be
        reached leaves the job running: reclaim_stale gives it to a worker again."""
        settings, attempt, mine = self.settings, job.attempts, self.worker_id
        dropped = "%s: the job is no longer this worker's; its outcome is dropped"
        try:
            if exc is None:
                if not await queue.complete(conn, job.id, worker_id=mine):
                    log.warning(dropped, what)
                    return
                BACKFILL_JOBS.labels("done").inc()
                elapsed_s = time.monotonic() - (started_s or time.monotonic())
                log.info("%s: done: %d trades published in %.1f s", what, trades, elapsed_s)
            elif _retriable(exc) and attempt < settings.max_attempts:
                backoff_s = retry_backoff_s(
                    attempt, settings.backoff_base_s, settings.backoff_cap_s, self._rng
                )
                if isinstance(exc, RateLimitedError):
                    backoff_s = max(backoff_s, exc.retry_after_s)
                if not await queue.retry_later(
                    conn, job.id, _described(exc), backoff_s, worker_id=mine
                ):
                    log.warning(dropped, what)
                    return
                BACKFILL_JOBS.labels("retried").inc()
                log.warning("%s: %s; retrying in %.1f s", what, _described(exc), backoff_s)
            else:
                error = _described(exc)
                if _retriable(exc):
                    error += f" (attempt {attempt} of {settings.max_attempts})"
                elif not isinstance(exc, FatalError | ValueError):
                    log.error("%s: failed unexpectedly", what, exc_info=exc)
                if await queue.fail(conn, job.id, error, worker_id=mine) is None:  # it logs
                    log.warning(dropped, what)
                    return
                BACKFILL_JOBS.labels("failed").inc()
        except TransientError as err:
            log.error(
                "%s: cannot record its outcome (%s); it stays running until reclaimed", what, err
            )


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _retriable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: the provider or Kafka failing for now, or a body
    that is not the provider's (an HTML error page from a proxy on the way)."""
    return isinstance(exc, TransientError | DeliveryError | MalformedResponseError)


def history_clients(config: AlpacaConfig, settings: BackfillSettings) -> dict[bool, AlpacaHistory]:
    """Alpaca's history for stocks (the configured feed; iex where it is crypto) and for crypto,
    sharing one budget at backfill priority; raise FatalError without keys."""
    budget = RequestBudget(PROVIDER, [Limit(settings.alpaca_requests_per_minute, 60.0)])
    stocks = config if config.feed != "crypto" else config.model_copy(update={"feed": "iex"})
    return {
        crypto: AlpacaHistory(
            stocks if not crypto else config.model_copy(update={"feed": "crypto"}),
            budget=budget,
            priority=Priority.BACKFILL,
            page_limit=settings.page_limit,
        )
        for crypto in (False, True)
    }


async def run(
    settings: BackfillSettings,
    *,
    kafka: KafkaSettings,
    database_url: str,
    alpaca: AlpacaConfig,
    codec: Codec,
    window_us: int,
) -> int:
    """Serve the status endpoints and work the queue until SIGINT or SIGTERM; return 0.

    Raise FatalError without Alpaca keys, UnreachableError if the broker or the database does
    not answer, ConfigError for a taken port or a missing topic.
    """
    histories = history_clients(alpaca, settings)
    require_broker(kafka.bootstrap)
    require_database(database_url)
    worker_id = settings.worker_id or default_worker_id()
    checks = {"kafka": kafka_check(kafka.bootstrap), "database": database_check(database_url)}
    status = await serve(
        status_app(COMPONENT, checks),
        settings.http_host,
        settings.http_port,
        port_variable="MS_BACKFILL_HTTP_PORT",
    )
    try:
        publisher = Publisher(kafka.producer_config(f"marketstream-backfill-{worker_id}"))
        try:
            partitions = publisher.partitions(TRADES)
        except DeliveryError as exc:
            raise ConfigError(f"MS_KAFKA_BOOTSTRAP={kafka.bootstrap}: {exc}") from exc
        worker = BackfillWorker(
            settings,
            worker_id=worker_id,
            database_url=database_url,
            publisher=publisher,
            codec=codec,
            partitions=partitions,
            histories=histories,
            window_us=window_us,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        UP.labels(COMPONENT).set(1)
        log.info("backfill worker %s: windows of %d s", worker_id, window_us // 1_000_000)
        await worker.run()
        await asyncio.to_thread(publisher.flush)  # what a stopped job had sent goes out whole
    finally:
        for history in histories.values():
            await history.close()
        await status.cleanup()
    return EXIT_OK
