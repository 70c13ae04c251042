"""Run a connector: batch its trades per partition, produce them, dead-letter what it rejects.

What every connector shares lives here: the producer (acks=all, idempotent), batching with a
linger, reconnect with jittered exponential backoff on TransientError, stop on FatalError,
dead letters for Rejected, metrics, the source's event clock stamped on every batch with
heartbeats to quiet partitions, and a flush on shutdown so nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from connectors.base import Connector, Record, Rejected
from connectors.batching import PartitionBatcher
from connectors.event_clock import EventClock
from connectors.feed_state import FeedState
from connectors.watchdog import watched
from shared.codec import Codec
from shared.dead_letters import DeadLetterPublisher
from shared.errors import DeliveryError, FatalError, TransientError
from shared.metrics import (
    BATCH_SIZE,
    BATCHES_PUBLISHED,
    RECONNECTS,
    TRADES_PUBLISHED,
)
from shared.models import (
    FeedEvent,
    FundamentalStatement,
    InstrumentStatus,
    Listing,
    PmPriceBatch,
    ProviderBarBatch,
    QuoteBatch,
    Trade,
    TradeBatch,
)
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.topics import (
    FEED_EVENTS,
    FUNDAMENTALS,
    LISTINGS,
    PM_PRICES,
    PROVIDER_BARS,
    QUOTES,
    STATUSES,
    TRADES,
)

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


@dataclass(slots=True)
class RunSummary:
    """What a run handed to Kafka: trades acknowledged on the trades topic, rows dead-lettered."""

    published: int = 0
    rejected: int = 0
    batches: int = 0
    quotes: int = 0  # acknowledged on md.quotes.v1
    provider_bars: int = 0  # acknowledged on md.provider_bars.v1
    statements: int = 0  # acknowledged on md.fundamentals.v1
    statuses: int = 0  # acknowledged on md.statuses.v1
    listings: int = 0  # acknowledged on md.listings.v1
    pm_prices: int = 0  # price rows acknowledged on md.pm_prices.v1


def backoff_s(attempt: int, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


class ConnectorRunner:
    """Drive one connector into Kafka until its feed ends or `stop()` is called."""

    def __init__(
        self,
        connector: Connector,
        publisher: Publisher,
        codec: Codec,
        *,
        partitions: int,
        batch_max_trades: int,
        linger_ms: float,
        heartbeat_ms: float = 250.0,
        topic: str = TRADES,
    ) -> None:
        self.connector = connector
        self.topic = topic
        self.publisher = publisher
        self.codec = codec
        self.batcher = PartitionBatcher(partitions, batch_max_trades, linger_ms / 1000)
        self.dead_letters = DeadLetterPublisher(publisher, codec, f"connector.{connector.name}")
        self.summary = RunSummary()
        self.clock = EventClock(live=connector.live)
        self.heartbeat_s = heartbeat_ms / 1000
        self._last_sent_s = [0.0] * partitions
        self._pending_trades: list[Trade] = []
        self._stopping = asyncio.Event()
        self._last_data_us: int | None = None  # wall clock of the feed's last item
        self._blind = False  # since a disconnect, until data comes again
        self._reloading = asyncio.Event()
        self._replacement: Connector | None = None
        self.feed = FeedState()
        self._topic_partitions: dict[str, int] = {}

    def stop(self) -> None:
        """Ask the run to end: the feed is left, pending trades are flushed and acknowledged."""
        self._stopping.set()

    async def run(self) -> RunSummary:
        """Consume the feed, then flush; raise DeliveryError if Kafka did not acknowledge everything."""
        linger = asyncio.create_task(self._flush_lingering())
        feed = asyncio.create_task(self._consume_with_reconnect())
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({feed, stop, linger}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (feed, stop, linger):
                task.cancel()
            # what the feed (or the linger) raised is raised below, once what the feed
            # yielded is flushed
            await asyncio.gather(feed, linger, return_exceptions=True)
            failure = next(
                (e for t in (feed, linger) if not t.cancelled() and (e := t.exception())), None
            )
            self._handle_trades()  # single trades not yet in a chunk
            self._publish(self.batcher.drain())
            if self.connector.closes_clock(self._finished(feed)):
                self._heartbeat(range(self.batcher.partitions), self.clock.end_of_stream_us())
            try:
                await asyncio.to_thread(self.publisher.flush)
            except DeliveryError as exc:
                raise exc from failure  # the loss, with what ended the feed
            finally:
                self.feed.stopped()
        if failure is not None:
            raise failure
        return self.summary

    @staticmethod
    def _finished(feed: asyncio.Task[None]) -> bool:
        """True if the feed ended by itself (not stopped, not failed)."""
        return feed.done() and not feed.cancelled() and feed.exception() is None

    def replace(self, connector: Connector) -> None:
        """Go on with `connector` (built from reloaded settings): the current session ends,
        what it yielded is published, and the next session is the new connector's."""
        self._replacement = connector
        self._reloading.set()

    @property
    def accepts_reload(self) -> bool:
        """Whether a `replace` would still be taken up (the run is not ending)."""
        return not self._stopping.is_set()

    async def _consume_with_reconnect(self) -> None:
        rng = random.Random()
        attempt = 0
        while True:
            if self._reloading.is_set() and self._replacement is not None:
                self._take_replacement()
                attempt = 0
            session = asyncio.create_task(self._session())
            reload = asyncio.create_task(self._reloading.wait())
            try:
                await asyncio.wait({session, reload}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                reload.cancel()
                if not session.done():
                    session.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await session
                    if (task := asyncio.current_task()) and task.cancelling():
                        raise asyncio.CancelledError  # stopped while the session closed
            if session.cancelled():
                continue  # a reload: the next session is the new connector's
            try:
                session.result()
                self._handle_trades()
                return
            except TransientError as exc:
                self._handle_trades()
                self.feed.failed(exc, fatal=False)
                if not self._blind:
                    self._feed_event("disconnected", str(exc))
                    self._blind = True
                RECONNECTS.labels(self.connector.name).inc()
                delay = backoff_s(attempt, rng)
                attempt += 1
                log.warning(
                    "%s feed failed (%s); reconnecting in %.2f s", self.connector.name, exc, delay
                )
                with contextlib.suppress(TimeoutError):  # a reload cuts the backoff short
                    async with asyncio.timeout(delay):
                        await self._reloading.wait()
            except FatalError as exc:
                self._handle_trades()
                self.feed.failed(exc, fatal=True)
                self._feed_event("down", str(exc))
                raise

    def _take_replacement(self) -> None:
        """Go on with the connector `replace` gave, after what the old one yielded."""
        self._reloading.clear()
        self._handle_trades()
        self._feed_event("disconnected", "settings reloaded: a new session")
        self._blind = True
        assert self._replacement is not None
        self.connector, self._replacement = self._replacement, None
        log.info("%s: settings reloaded; a new session starts", self.connector.name)

    async def _session(self) -> None:
        """One session of the connector's stream, closed (its sockets with it) however it ends."""
        async with contextlib.aclosing(watched(self.connector)) as items:  # type: ignore[type-var]
            async for item in items:
                if self._blind:
                    self._feed_event("reconnected", "data again after a disconnect")
                    self._blind = False
                self._last_data_us = time.time_ns() // 1000
                self._handle(item)

    def _handle(self, item: Record | Rejected) -> None:
        if not isinstance(item, Rejected):
            self.feed.data(getattr(item, "instruments", ()))
        if isinstance(item, ProviderBarBatch):
            self._publish_provider_bars(item)
            return
        if isinstance(item, FundamentalStatement):
            self._publish_statement(item)
            return
        if isinstance(item, InstrumentStatus):
            self._publish_status(item)
            return
        if isinstance(item, QuoteBatch):
            self._publish_quotes(item)
            return
        if isinstance(item, Listing):
            self._publish_listing(item)
            return
        if isinstance(item, PmPriceBatch):
            self._publish_pm_prices(item)
            return
        if isinstance(item, Trade):
            self._pending_trades.append(item)
            if len(self._pending_trades) >= 1024:
                self._handle_trades()
            return
        self._handle_trades()
        if isinstance(item, TradeBatch):
            if len(item):
                self.clock.observe(int(item.ts_event_us.max()))
            self._publish(self.batcher.add(item))
        else:
            self.summary.rejected += 1
            self.feed.rejected(item.reason)
            self.dead_letters.publish(
                reason=item.reason,
                detail=item.detail,
                source=self.connector.origin,
                payload=item.payload,
                line_number=item.line_number,
            )

    def _handle_trades(self) -> None:
        if self._pending_trades:
            chunk = TradeBatch.from_trades(
                self.connector.source, self._pending_trades, time.time_ns() // 1000
            )
            self._pending_trades = []
            self.clock.observe(int(chunk.ts_event_us.max()))
            self._publish(self.batcher.add(chunk))

    async def _flush_lingering(self) -> None:
        """Publish batches that waited out the linger, and heartbeats to quiet partitions."""
        interval = max(min(self.batcher.linger_s, self.heartbeat_s) / 2, 0.001)
        while True:
            await asyncio.sleep(interval)
            self._handle_trades()
            self._publish(self.batcher.due())
            if self.clock.live or self.clock.latest_event_us is not None:
                quiet_since = time.monotonic() - self.heartbeat_s
                self._heartbeat(
                    [p for p, sent in enumerate(self._last_sent_s) if sent < quiet_since],
                    self.clock.now_us(),
                )
            self.publisher.poll(0)

    def _heartbeat(self, partitions: Iterable[int], watermark_us: int) -> None:
        """Send each partition an empty batch that advances this source's event clock."""
        self._publish(
            [(p, TradeBatch.heartbeat(self.connector.source, watermark_us)) for p in partitions]
        )

    def _publish(self, batches: list[tuple[int, TradeBatch]]) -> None:
        now_s = time.monotonic()
        for partition, chunk in batches:
            batch = dataclasses.replace(
                chunk, watermark_us=max(chunk.watermark_us, self.clock.now_us())
            )
            self._last_sent_s[partition] = now_s
            n = len(batch)
            if n:
                BATCH_SIZE.labels(batch.source).observe(n)
            self.publisher.produce(
                self.topic,
                self.codec.encode_trade_batch(batch),
                partition=partition,
                on_ack=functools.partial(self._acked, n, batch.source),
            )

    def _feed_event(self, kind: str, detail: str) -> None:
        """Tell gap detection where this feed was blind (md.feed_events.v1)."""
        now_us = time.time_ns() // 1000
        event = FeedEvent(self.connector.source, kind, detail, self._last_data_us, now_us, now_us)
        self.publisher.produce(FEED_EVENTS, self.codec.encode_feed_event(event), partition=0)

    def _by_partition(
        self, instruments: tuple[str, ...], instrument_index: NDArray[np.int32]
    ) -> list[tuple[int, NDArray[np.intp]]]:
        """The rows of each partition their instruments go to."""
        of_instrument = np.array(
            [partition_for(s, self.batcher.partitions) for s in instruments], dtype=np.int32
        )
        of_row = of_instrument[instrument_index]
        return [(p, np.flatnonzero(of_row == p)) for p in np.unique(of_row).tolist()]

    def _publish_quotes(self, quotes: QuoteBatch) -> None:
        """Produce quotes, a message per partition of their instruments."""
        for partition, rows in self._by_partition(quotes.instruments, quotes.instrument_index):
            part = quotes.select(rows)
            self.publisher.produce(
                QUOTES,
                self.codec.encode_quote_batch(part),
                partition=partition,
                on_ack=functools.partial(self._counted, "quotes", len(part)),
            )

    def _publish_provider_bars(self, bars: ProviderBarBatch) -> None:
        """Produce the provider's bars, a message per partition of their instruments."""
        parts = self._by_partition(bars.instruments, bars.instrument_index)
        remaining = [len(parts)]  # messages of `bars` not yet acknowledged

        connector = self.connector  # a reload may replace it before Kafka answers

        def acked(n: int) -> None:
            self._counted("provider_bars", n)
            remaining[0] -= 1
            if not remaining[0]:
                connector.delivered(bars)

        for partition, rows in parts:
            part = bars.select(rows)
            self.publisher.produce(
                PROVIDER_BARS,
                self.codec.encode_provider_bars(part),
                partition=partition,
                on_ack=functools.partial(acked, len(part)),
            )

    def _publish_statement(self, statement: FundamentalStatement) -> None:
        """Produce a statement, keyed for compaction: the latest report of each is kept."""
        key = "|".join(
            (
                statement.symbol,
                statement.statement,
                statement.period,
                statement.fiscal_date,
                statement.provider,
            )
        )

        connector = self.connector  # a reload may replace it before Kafka answers

        def acked() -> None:
            self._counted("statements", 1)
            connector.delivered(statement)

        self.publisher.produce(
            FUNDAMENTALS,
            self.codec.encode_fundamental(statement),
            key=key.encode(),
            partition=partition_for(statement.symbol, self.batcher.partitions),
            on_ack=acked,
        )

    def _publish_status(self, status: InstrumentStatus) -> None:
        self.publisher.produce(
            STATUSES,
            self.codec.encode_instrument_status(status),
            key=status.instrument.encode(),
            partition=partition_for(status.instrument, self.batcher.partitions),
            on_ack=functools.partial(self._counted, "statuses", 1),
        )

    def _partitions_of(self, topic: str) -> int:
        """The partition count of a topic not co-partitioned with the trades, asked once."""
        if topic not in self._topic_partitions:
            self._topic_partitions[topic] = self.publisher.partitions(topic)
        return self._topic_partitions[topic]

    def _publish_listing(self, listing: Listing) -> None:
        """Produce a listing keyed venue:market_id, for compaction: the latest of each is kept."""
        self.publisher.produce(
            LISTINGS,
            self.codec.encode_listing(listing),
            key=listing.key.encode(),
            partition=partition_for(listing.key, self._partitions_of(LISTINGS)),
            on_ack=functools.partial(self._counted, "listings", 1),
        )

    def _publish_pm_prices(self, prices: PmPriceBatch) -> None:
        """Produce prices, a message per partition of their venue:market_id keys."""
        partitions = self._partitions_of(PM_PRICES)
        of_market = np.array(
            [partition_for(f"{prices.venue}:{m}", partitions) for m in prices.markets],
            dtype=np.int32,
        )
        of_row = of_market[prices.market_index]
        for partition in np.unique(of_row).tolist():
            part = prices.select(np.flatnonzero(of_row == partition))
            self.publisher.produce(
                PM_PRICES,
                self.codec.encode_pm_price_batch(part),
                partition=partition,
                on_ack=functools.partial(self._counted, "pm_prices", len(part)),
            )

    def provider_stats(self) -> dict[str, dict[str, Any]]:
        """The connector's own per-provider stats, or, for one that keeps none, its feed's."""
        return self.connector.provider_stats() or {
            self.connector.name: self.feed.stats(self.summary.published)
        }

    def _counted(self, field: str, n: int) -> None:
        setattr(self.summary, field, getattr(self.summary, field) + n)

    def _acked(self, trades: int, source: str) -> None:
        if not trades:
            return
        self.summary.published += trades
        self.summary.batches += 1
        TRADES_PUBLISHED.labels(source).inc(trades)
        BATCHES_PUBLISHED.labels(source).inc()
