"""Run a connector: batch its trades per partition, produce them, dead-letter what it rejects.

What every connector shares lives here: the producer (acks=all, idempotent), batching with a
linger, reconnect with jittered exponential backoff on TransientError, stop on FatalError,
dead letters for Rejected, metrics, and a flush on shutdown so nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from connectors.base import Connector, Rejected
from connectors.batching import PartitionBatcher
from streams.codec import Codec
from streams.dlq import DeadLetterPublisher
from streams.errors import FatalError, TransientError
from streams.metrics import BATCH_SIZE, BATCHES_PUBLISHED, RECONNECTS, TRADES_PUBLISHED
from streams.models import Trade, TradeBatch
from streams.producer import Publisher
from streams.topics import TRADES

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


@dataclass(slots=True)
class RunSummary:
    """What a run handed to Kafka: trades acknowledged on the trades topic, rows dead-lettered."""

    published: int = 0
    rejected: int = 0
    batches: int = 0


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
    ) -> None:
        self.connector = connector
        self.publisher = publisher
        self.codec = codec
        self.batcher = PartitionBatcher(partitions, batch_max_trades, linger_ms / 1000)
        self.dead_letters = DeadLetterPublisher(publisher, codec, f"connector.{connector.name}")
        self.summary = RunSummary()
        self._pending_trades: list[Trade] = []
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask the run to end: the feed is left, pending trades are flushed and acknowledged."""
        self._stopping.set()

    async def run(self) -> RunSummary:
        """Consume the feed, then flush; raise DeliveryError if Kafka did not acknowledge everything."""
        linger = asyncio.create_task(self._flush_lingering())
        feed = asyncio.create_task(self._consume_with_reconnect())
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({feed, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (feed, stop, linger):
                task.cancel()
            for task in (feed, linger):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._publish(self.batcher.drain())
            await asyncio.to_thread(self.publisher.flush)
        if feed.done() and not feed.cancelled() and (exc := feed.exception()) is not None:
            raise exc
        return self.summary

    async def _consume_with_reconnect(self) -> None:
        rng = random.Random()
        attempt = 0
        while True:
            try:
                async for item in self.connector.stream():
                    attempt = 0
                    self._handle(item)
                self._handle_trades()
                return
            except TransientError as exc:
                self._handle_trades()
                RECONNECTS.labels(self.connector.name).inc()
                delay = backoff_s(attempt, rng)
                attempt += 1
                log.warning("%s feed failed (%s); reconnecting in %.2f s", self.connector.name, exc, delay)
                await asyncio.sleep(delay)
            except FatalError:
                self._handle_trades()
                raise

    def _handle(self, item: Trade | TradeBatch | Rejected) -> None:
        if isinstance(item, Trade):
            self._pending_trades.append(item)
            if len(self._pending_trades) >= 1024:
                self._handle_trades()
            return
        self._handle_trades()
        if isinstance(item, TradeBatch):
            self._publish(self.batcher.add(item))
        else:
            self.summary.rejected += 1
            self.dead_letters.publish(
                reason=item.reason,
                detail=item.detail,
                source=self.connector.source,
                payload=item.payload,
                line_number=item.line_number,
            )

    def _handle_trades(self) -> None:
        if self._pending_trades:
            chunk = TradeBatch.from_trades(self.connector.name, self._pending_trades, time.time_ns() // 1000)
            self._pending_trades = []
            self._publish(self.batcher.add(chunk))

    async def _flush_lingering(self) -> None:
        interval = max(self.batcher.linger_s / 2, 0.001)
        while True:
            await asyncio.sleep(interval)
            self._handle_trades()
            self._publish(self.batcher.due())
            self.publisher.poll(0)

    def _publish(self, batches: list[tuple[int, TradeBatch]]) -> None:
        for partition, batch in batches:
            n = len(batch)
            BATCH_SIZE.labels(batch.source).observe(n)
            self.publisher.produce(
                TRADES,
                self.codec.encode_trade_batch(batch),
                partition=partition,
                on_ack=lambda n=n, source=batch.source: self._acked(n, source),
            )

    def _acked(self, trades: int, source: str) -> None:
        self.summary.published += trades
        self.summary.batches += 1
        TRADES_PUBLISHED.labels(source).inc(trades)
        BATCHES_PUBLISHED.labels(source).inc()
