"""Read md.bars.v1 into the hub: from a lookback at start (rebuilding the replay buffer), then live.

Every replica reads every partition itself (no consumer group), so replicas hold the same
messages and, with the bars' own seq numbers, give the same answers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.codec import Codec
from streams.dlq import DeadLetterPublisher
from streams.errors import DecodeError
from streams.models import Bar
from streams.topics import BARS

log = logging.getLogger(__name__)


class BarSource:
    """A consumer thread that hands decoded bars to `deliver` on the event loop."""

    def __init__(
        self, bootstrap: str, codec: Codec, dead_letters: DeadLetterPublisher, lookback_s: float
    ) -> None:
        self.bootstrap = bootstrap
        self.codec = codec
        self.dead_letters = dead_letters
        self.lookback_s = lookback_s
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(
        self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[Bar]], object]
    ) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(loop, deliver), name="bar-source", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _assign(self, consumer: Consumer) -> None:
        partitions = consumer.list_topics(BARS, timeout=10).topics[BARS].partitions
        since_ms = int((time.time() - self.lookback_s) * 1000)
        wanted = [TopicPartition(BARS, p, since_ms) for p in partitions]
        try:
            starts = consumer.offsets_for_times(wanted, timeout=10)
        except KafkaException as exc:
            log.warning(
                "offsets_for_times unsupported (%s); reading %s from the beginning", exc, BARS
            )
            starts = [TopicPartition(BARS, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(
            [
                tp if tp.offset >= 0 else TopicPartition(BARS, tp.partition, OFFSET_BEGINNING)
                for tp in starts
            ]
        )

    def _run(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[Bar]], object]) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"ws-gateway-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        try:
            self._assign(consumer)
            while not self._stop.is_set():
                messages = consumer.consume(5000, 0.05)
                if not messages:
                    self.ready.set()  # caught up with what was there at start
                    continue
                bars = []
                for msg in messages:
                    if msg.error() is not None:
                        log.warning("consumer error on %s: %s", BARS, msg.error())
                        continue
                    try:
                        bars.append(self.codec.decode_bar(msg.value() or b""))
                    except DecodeError as exc:
                        self.dead_letters.publish(
                            reason="undecodable",
                            detail=str(exc),
                            source=BARS,
                            payload=msg.value() or b"",
                            source_partition=msg.partition(),
                            source_offset=msg.offset(),
                            key=msg.key(),
                        )
                if bars:
                    loop.call_soon_threadsafe(deliver, bars)
        finally:
            consumer.close()
