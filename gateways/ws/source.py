"""Read md.bars.v1 into the hub: from a lookback at start (rebuilding the replay buffer), then live.

Every replica reads every partition itself (no consumer group), so replicas hold the same
messages and, with the bars' own seq numbers, give the same answers. The source is ready once
it has read every partition up to the end offset it saw at start, however busy the topic is.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Final

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from shared.codec import Codec
from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError
from shared.models import Bar
from shared.topics import BARS

log = logging.getLogger(__name__)

BATCH_MAX: Final = 5000
# consume() returns after BATCH_MAX messages or this long, whichever is first. The server's
# writer batches frames itself, so bars are handed over soon after they are fetched.
POLL_S: Final = 0.005


class CatchUp:
    """Which partitions the reader has not yet read up to their end offsets seen at start."""

    def __init__(self, starts: Mapping[int, int], ends: Mapping[int, int]) -> None:
        # An empty partition is caught up at once. Any other waits for a fetch to confirm its
        # end, even one that starts at the listed end: on Tansu that end may lie short of the
        # true one, inside the last batch.
        self.behind = {p: end for p, end in ends.items() if end > starts[p] or end > 0}
        self.unconfirmed = set(self.behind)

    @property
    def done(self) -> bool:
        return not self.behind

    def confirm(self, partition: int, fetched_end: int) -> None:
        """Raise a partition's end to the high watermark of its first fetch, once.

        Tansu's ListOffsets answers the last batch's base offset + 1, short of the true end;
        its fetch responses carry the true one. Fixed after one fetch, the end stays reachable
        on a topic that never stops growing.
        """
        if partition in self.unconfirmed:
            self.unconfirmed.discard(partition)
            if partition in self.behind:
                self.behind[partition] = max(self.behind[partition], fetched_end)

    def advance(self, positions: Mapping[int, int]) -> bool:
        """Record partitions' positions (next offset to read); return True once none is behind."""
        for partition, position in positions.items():
            end = self.behind.get(partition)
            if end is not None and position >= end and partition not in self.unconfirmed:
                del self.behind[partition]
        return self.done


class BarSource:
    """A consumer thread that hands decoded bars to `deliver` on the event loop."""

    def __init__(
        self, bootstrap: str, codec: Codec, dead_letters: DeadLetterPublisher, lookback_s: float
    ) -> None:
        self.bootstrap = bootstrap
        self.codec = codec
        self.dead_letters = dead_letters
        self.lookback_s = lookback_s
        self.ready = threading.Event()  # set on the loop, after the bars read up to then
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

    def _assign(self, consumer: Consumer) -> CatchUp:
        """Assign every partition from the lookback; return what must be read to be ready."""
        partitions = consumer.list_topics(BARS, timeout=10).topics[BARS].partitions
        bounds = {
            p: consumer.get_watermark_offsets(TopicPartition(BARS, p), timeout=10)
            for p in partitions
        }
        since_ms = int((time.time() - self.lookback_s) * 1000)
        wanted = [TopicPartition(BARS, p, since_ms) for p in partitions]
        try:
            offsets = consumer.offsets_for_times(wanted, timeout=10)
            found = {tp.partition: tp.offset for tp in offsets}
        except KafkaException as exc:
            log.warning(
                "offsets_for_times unsupported (%s); reading %s from the beginning", exc, BARS
            )
            found = {p: OFFSET_BEGINNING for p in partitions}
        starts = {}
        for p, offset in found.items():
            low, high = bounds[p]
            # OFFSET_END: no message since the lookback, so nothing to rebuild from.
            starts[p] = offset if offset >= 0 else high if offset == OFFSET_END else low
        consumer.assign([TopicPartition(BARS, p, offset) for p, offset in starts.items()])
        log.info(
            "rebuilding the replay buffer from %s, (start, end) offsets by partition: %s",
            BARS,
            {p: (starts[p], bounds[p][1]) for p in sorted(starts)},
        )
        return CatchUp(starts, {p: high for p, (_, high) in bounds.items()})

    def _assign_when_reachable(self, consumer: Consumer) -> CatchUp | None:
        """Assign as `_assign` does, retrying with backoff while the broker does not answer
        (the gateway stays unready meanwhile); None if stopped first."""
        delay_s = 0.5
        while not self._stop.is_set():
            try:
                return self._assign(consumer)
            except KafkaException as exc:
                log.warning("cannot read %s yet (%s); retrying in %.1f s", BARS, exc, delay_s)
                self._stop.wait(delay_s)
                delay_s = min(30.0, 2 * delay_s)
        return None

    @staticmethod
    def _caught_up(consumer: Consumer, catch_up: CatchUp) -> bool:
        """Confirm ends from fetched high watermarks, then compare positions with them."""
        for partition in list(catch_up.unconfirmed):
            _, high = consumer.get_watermark_offsets(TopicPartition(BARS, partition), cached=True)
            if high >= 0:  # OFFSET_INVALID until the partition's first fetch response
                catch_up.confirm(partition, high)
        behind = [TopicPartition(BARS, p) for p in catch_up.behind]
        return catch_up.advance({tp.partition: tp.offset for tp in consumer.position(behind)})

    def _run(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[Bar]], object]) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"ws-gateway-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        started = time.monotonic()
        try:
            catch_up = self._assign_when_reachable(consumer)
            while not self._stop.is_set():
                if catch_up is not None and (catch_up.done or self._caught_up(consumer, catch_up)):
                    # Queued after every deliver so far: ready means those bars are in the hub.
                    loop.call_soon_threadsafe(self.ready.set)
                    log.info(
                        "replay buffer rebuilt: read %s to its end offsets at start in %.1f s",
                        BARS,
                        time.monotonic() - started,
                    )
                    catch_up = None
                messages = consumer.consume(BATCH_MAX, POLL_S)
                if not messages:
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
