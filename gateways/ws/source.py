"""Read md.bars.v1 (and md.trades.v1, md.quotes.v1) into the hub: from a lookback at start
(rebuilding the replay buffer), then live.

Every replica reads every partition itself (no consumer group), so replicas hold the same
messages and, with the bars' own seq numbers and the trades' and quotes' seqs from their Kafka
positions (see updates), give the same answers. The source is ready once it has read every
partition up to the end offset it saw at start, however busy the topics are. Bars and trades
are read by separate lanes, each at most a bounded distance ahead of the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from gateways.ws import protocol
from gateways.ws.buffer import Update
from gateways.ws.updates import (
    TooManyRowsError,
    arbitrage_update,
    bar_update,
    first_seq,
    quote_updates,
    trade_updates,
)
from shared.codec import Codec
from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError
from shared.metrics import WS_SOURCE_WAIT
from shared.topics import ARBITRAGE, BARS, QUOTES, TRADES

log = logging.getLogger(__name__)

BATCH_MAX: Final = 5000
# consume() returns after BATCH_MAX messages or this long, whichever is first. The server's
# writer batches frames itself, so bars are handed over soon after they are fetched.
POLL_S: Final = 0.005
# How far a lane's reader may run ahead of the event loop (see HandOff), and how much librdkafka
# may prefetch for it: together they bound what a gateway that falls behind holds.
PENDING_MAX: Final = 2
DELIVERY_MAX_UPDATES: Final = 5000
PREFETCH_MAX_KB: Final = 32_768


Partition = tuple[str, int]  # topic, partition
# Takes a delivery on the loop; may return a future, done once the gateway wants more.
Deliver = Callable[[list[Update]], "asyncio.Future[None] | None"]
P = TypeVar("P", bound=Hashable)
# What each kind of channel is served from.
TOPIC_OF: Final = {
    protocol.BARS: BARS,
    protocol.TRADES: TRADES,
    protocol.QUOTES: QUOTES,
    protocol.ARB: ARBITRAGE,
}
# Which reader reads each topic: bars and arbitrage flags are few and watched live; trades and
# quotes can be far more than the gateway can serve. Each lane has its own consumer and
# hand-off, so bars never wait behind trades still on Kafka. (Frames already queued for
# clients are another matter: while the writer is behind, both lanes wait.)
LANE_OF: Final = {BARS: "bars", ARBITRAGE: "bars", TRADES: "ticks", QUOTES: "ticks"}
# How long a lane's fetch waits on partitions with nothing new. A busy feed's fetches find data
# and return at once; idle ones cost the broker (on Tansu, about 0.1 core per consumer polling
# every 10 ms, and it answers late rather than when data arrives), so only the bars wait short.
FETCH_WAIT_MS: Final = {"bars": 10, "ticks": 50}


@dataclass(frozen=True, slots=True)
class Feed:
    """A topic the gateway serves, and how far back it reads it at start."""

    topic: str
    lookback_s: float


class CatchUp(Generic[P]):
    """Which partitions the reader has not yet read up to their end offsets seen at start."""

    def __init__(self, starts: Mapping[P, int], ends: Mapping[P, int]) -> None:
        self.starts = dict(starts)
        # An empty partition is caught up at once. Any other waits for a fetch to confirm its
        # end, even one that starts at the listed end: on Tansu that end may lie short of the
        # true one, inside the last batch.
        self.behind = {p: end for p, end in ends.items() if end > starts[p] or end > 0}
        self.unconfirmed = set(self.behind)

    @property
    def done(self) -> bool:
        return not self.behind

    def confirm(self, partition: P, fetched_end: int) -> None:
        """Raise a partition's end to the high watermark of its first fetch, once.

        Tansu's ListOffsets answers the last batch's base offset + 1, short of the true end;
        its fetch responses carry the true one. Fixed after one fetch, the end stays reachable
        on a topic that never stops growing.
        """
        if partition in self.unconfirmed:
            self.unconfirmed.discard(partition)
            if partition in self.behind:
                self.behind[partition] = max(self.behind[partition], fetched_end)

    def advance(self, positions: Mapping[P, int]) -> bool:
        """Record partitions' positions (next offset to read; negative before a partition's
        first message is read: then where it was assigned from); return True once none is
        behind."""
        for partition, position in positions.items():
            if position < 0:
                position = self.starts.get(partition, position)
            end = self.behind.get(partition)
            if end is not None and position >= end and partition not in self.unconfirmed:
                del self.behind[partition]
        return self.done


def _names(feeds: list[Feed]) -> str:
    return ", ".join(feed.topic for feed in feeds)


class HandOff:
    """Hands one lane's updates to the event loop, at most PENDING_MAX deliveries ahead of it.

    The lane's reader waits while that many are queued on the loop, or taken while the
    gateway's writer is behind (see Deliver), so a gateway that falls behind reads more slowly
    (what it has not read stays on Kafka) instead of queueing without bound, and stays quick to
    answer a signal. A delivery holds at most DELIVERY_MAX_UPDATES updates, so the other lane's
    deliveries wait behind little.
    """

    def __init__(
        self,
        lane: str,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        stop: threading.Event,
    ) -> None:
        self.lane = lane
        self._loop = loop
        self._deliver = deliver
        self._stop = stop
        self._slots = threading.BoundedSemaphore(PENDING_MAX)
        self._waited = WS_SOURCE_WAIT.labels(lane)

    def put(self, updates: list[Update]) -> bool:
        """Queue one delivery on the loop; False if stopped first, or the loop is gone."""
        if not self._slots.acquire(blocking=False):
            waiting_since = time.monotonic()
            while not self._slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    return False
            self._waited.inc(time.monotonic() - waiting_since)
        if self._stop.is_set() or not self.after_queued(functools.partial(self._take, updates)):
            self._slots.release()
            return False
        return True

    def after_queued(self, callback: Callable[[], object]) -> bool:
        """Run `callback` on the loop after every delivery queued so far; False if the loop
        is closed (the gateway has stopped)."""
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:
            return False
        return True

    def _take(self, updates: list[Update]) -> None:
        """Deliver on the loop; the slot is free again once the delivery is taken, or, if the
        gateway answers with a future (its writer is behind), once that is done."""
        caught_up = None
        try:
            caught_up = self._deliver(updates)
        finally:
            if asyncio.isfuture(caught_up):
                caught_up.add_done_callback(self._release)
            else:
                self._slots.release()

    def _release(self, _: object) -> None:
        self._slots.release()


class TopicSource:
    """One consumer thread per lane, handing the hub's updates to `deliver` on the event loop."""

    def __init__(
        self,
        bootstrap: str,
        codec: Codec,
        dead_letters: DeadLetterPublisher,
        feeds: list[Feed],
    ) -> None:
        self.bootstrap = bootstrap
        self.codec = codec
        self.dead_letters = dead_letters
        self.ready = threading.Event()  # set on the loop, after the updates read up to then
        self._lanes: dict[str, list[Feed]] = {}
        for feed in feeds:
            self._lanes.setdefault(LANE_OF[feed.topic], []).append(feed)
        self._unready = set(self._lanes)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # The seq after which each partition's trades or quotes are all read.
        self._held_after: dict[Partition, int] = {}

    def start(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        for lane, feeds in self._lanes.items():
            hand_off = HandOff(lane, loop, deliver, self._stop)
            thread = threading.Thread(
                target=self._run, args=(feeds, hand_off), name=f"topic-source-{lane}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _lane_ready(self, lane: str) -> None:
        """On the loop: the lane has read its topics up to their ends at start."""
        self._unready.discard(lane)
        if not self._unready:
            self.ready.set()

    def _starts(self, consumer: Consumer, feed: Feed) -> tuple[dict[int, int], dict[int, int]]:
        """Where to start reading each partition of the feed's topic, and its end offsets."""
        topic = feed.topic
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        if not partitions:
            log.warning("%s does not exist (yet): its channels stay empty until a restart", topic)
        bounds = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
        since_ms = int((time.time() - feed.lookback_s) * 1000)
        wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
        try:
            offsets = consumer.offsets_for_times(wanted, timeout=10)
            found = {tp.partition: tp.offset for tp in offsets}
        except KafkaException as exc:
            log.warning(
                "offsets_for_times unsupported (%s); reading %s from the beginning", exc, topic
            )
            found = {p: OFFSET_BEGINNING for p in partitions}
        starts = {}
        for p, offset in found.items():
            low, high = bounds[p]
            # OFFSET_END: no message since the lookback, so nothing to rebuild from.
            starts[p] = offset if offset >= 0 else high if offset == OFFSET_END else low
        log.info(
            "rebuilding the replay buffer from %s, (start, end) offsets by partition: %s",
            topic,
            {p: (starts[p], bounds[p][1]) for p in sorted(starts)},
        )
        return starts, {p: high for p, (_, high) in bounds.items()}

    def _assign(self, consumer: Consumer, feeds: list[Feed]) -> CatchUp[Partition]:
        """Assign every partition from the lookback; return what must be read to be ready."""
        starts: dict[Partition, int] = {}
        ends: dict[Partition, int] = {}
        for feed in feeds:
            topic_starts, topic_ends = self._starts(consumer, feed)
            for p, offset in topic_starts.items():
                starts[(feed.topic, p)] = offset
                ends[(feed.topic, p)] = topic_ends[p]
                self._held_after[(feed.topic, p)] = first_seq(offset) - 1
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
        return CatchUp(starts, ends)

    def _assign_when_reachable(
        self, consumer: Consumer, feeds: list[Feed]
    ) -> CatchUp[Partition] | None:
        """Assign as `_assign` does, retrying with backoff while the broker does not answer
        (the gateway stays unready meanwhile); None if stopped first."""
        delay_s = 0.5
        while not self._stop.is_set():
            try:
                return self._assign(consumer, feeds)
            except KafkaException as exc:
                log.warning(
                    "cannot read %s yet (%s); retrying in %.1f s",
                    _names(feeds),
                    exc,
                    delay_s,
                )
                self._stop.wait(delay_s)
                delay_s = min(30.0, 2 * delay_s)
        return None

    @staticmethod
    def _caught_up(consumer: Consumer, catch_up: CatchUp[Partition]) -> bool:
        """Confirm ends from fetched high watermarks, then compare positions with them."""
        for key in list(catch_up.unconfirmed):
            topic, partition = key
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high >= 0:  # OFFSET_INVALID until the partition's first fetch response
                catch_up.confirm(key, high)
        behind = [TopicPartition(t, p) for t, p in catch_up.behind]
        positions = consumer.position(behind)
        return catch_up.advance({(str(tp.topic), int(tp.partition)): tp.offset for tp in positions})

    def _updates(self, msg: Message) -> list[Update]:
        """What one message becomes; raise DecodeError (or TooManyRowsError) if it cannot."""
        topic, value = str(msg.topic()), msg.value() or b""
        if topic == BARS:
            return [bar_update(self.codec.decode_bar(value))]
        partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
        held_after = self._held_after[(topic, partition)]
        if topic == TRADES:
            return trade_updates(self.codec.decode_trade_batch(value), offset, held_after)
        if topic == ARBITRAGE:
            return [arbitrage_update(self.codec.decode_arbitrage(value), offset, held_after)]
        return quote_updates(self.codec.decode_quote_batch(value), offset, held_after)

    def _run(self, feeds: list[Feed], hand_off: HandOff) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"ws-gateway-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": FETCH_WAIT_MS[hand_off.lane],
                "queued.max.messages.kbytes": PREFETCH_MAX_KB,
                # A topic recreated under the gateway is read from its first message.
                "auto.offset.reset": "earliest",
            }
        )
        started = time.monotonic()
        try:
            catch_up = self._assign_when_reachable(consumer, feeds)
            while not self._stop.is_set():
                if catch_up is not None and (catch_up.done or self._caught_up(consumer, catch_up)):
                    # Queued after every delivery so far: ready means those updates are in the hub.
                    hand_off.after_queued(functools.partial(self._lane_ready, hand_off.lane))
                    log.info(
                        "replay buffer rebuilt: read %s to their end offsets at start in %.1f s",
                        _names(feeds),
                        time.monotonic() - started,
                    )
                    catch_up = None
                updates: list[Update] = []
                for msg in consumer.consume(BATCH_MAX, POLL_S):
                    updates += self._read(msg)
                    while len(updates) >= DELIVERY_MAX_UPDATES:
                        if not hand_off.put(updates[:DELIVERY_MAX_UPDATES]):
                            return
                        del updates[:DELIVERY_MAX_UPDATES]
                if updates and not hand_off.put(updates):
                    return
        finally:
            consumer.close()

    def _read(self, msg: Message) -> list[Update]:
        """The updates of one message; none for an error or (dead-lettered) an unreadable one."""
        if msg.error() is not None:
            log.warning("consumer error on %s: %s", msg.topic(), msg.error())
            return []
        try:
            return self._updates(msg)
        except (DecodeError, TooManyRowsError) as exc:
            self.dead_letters.publish(
                reason="undecodable" if isinstance(exc, DecodeError) else "too_large",
                detail=str(exc),
                source=msg.topic() or "",
                payload=msg.value() or b"",
                source_partition=msg.partition(),
                source_offset=msg.offset(),
                key=msg.key(),
            )
            return []
