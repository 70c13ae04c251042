"""A confluent-kafka producer that counts what Kafka acknowledged and what it refused.

Besides `flush`, which waits for everything queued, the publisher numbers the messages it
queues, so that a caller can wait for the ones queued before a `mark` while it goes on
producing (`settled`): librdkafka's flush only returns once its queue is empty.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Final, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shared.errors import DeliveryError
from shared.metrics import ACKED_MESSAGES, DELIVERY_FAILURES

log = logging.getLogger(__name__)

OnAck = Callable[[], None]
SETTLED_POLL_S: Final = 0.005


class Publisher:
    """Produce with acks=all; `flush` raises DeliveryError if anything was not acknowledged.

    Delivery callbacks run when someone polls. By default every produce polls once; an owner
    that polls on a timer passes `poll_after_produce=False`: a poll releases the GIL, and while
    another thread holds it, taking it back waits up to the interpreter's switch interval.
    """

    def __init__(self, config: dict[str, object], *, poll_after_produce: bool = True) -> None:
        self._producer = Producer(config)
        self._poll_after_produce = poll_after_produce
        self.acked: Tally[str] = Tally()
        self.failed: Tally[str] = Tally()
        ACKED_MESSAGES.track(self.acked)
        self._partition_counts: dict[str, int] = {}
        self._tallying = threading.Lock()
        self._queued = 0  # messages handed to librdkafka so far, numbered from 0
        self._settled_below = 0  # every message numbered below this is acknowledged or failed
        self._settled_ahead: set[int] = set()  # settled out of order, numbered above that
        self._first_failed: int | None = None  # the lowest number Kafka refused
        # The numbers Kafka refused, most recent last (a bounded record: refusals are rare),
        # so that one refusal fails the waits that cover it, not every later one.
        self._refused: collections.deque[int] = collections.deque(maxlen=100_000)

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        on_ack: OnAck | None = None,
    ) -> None:
        """Queue one message; block (serving callbacks) while librdkafka's queue is full."""
        number = self._number(1)

        def delivered(err: KafkaError | None, msg: Message) -> None:
            self._delivered(err, msg, number)
            if err is None and on_ack is not None:
                on_ack()

        try:
            while True:
                try:
                    if partition is None:
                        self._producer.produce(topic, value, key=key, on_delivery=delivered)
                    else:
                        self._producer.produce(
                            topic, value, key=key, partition=partition, on_delivery=delivered
                        )
                    break
                except BufferError:
                    self._producer.poll(0.05)
        except BaseException:
            self._settle(number)  # never queued: nothing will report it
            raise
        if self._poll_after_produce:
            self._producer.poll(0)

    def produce_batch(self, topic: str, partition: int, messages: list[dict[str, object]]) -> None:
        """Queue many messages (dicts of value and key) for one partition in one call.

        confluent-kafka's `produce_batch` crosses into librdkafka once for the lot, a few times
        cheaper per message than `produce`. Once the queue is full librdkafka refuses every
        message after, so what is retried after a poll is the batch's tail, still in order.
        It sends the whole batch to one partition: a message's own "partition" is ignored; and
        it refuses a partition librdkafka has no metadata for yet, so the first batch to a topic
        waits for the metadata.
        """
        if topic not in self._partition_counts:
            self._partition_counts[topic] = self.partitions(topic)
        if not 0 <= partition < self._partition_counts[topic]:
            raise DeliveryError(f"{topic} has no partition {partition}")
        # One partition reports deliveries in the order it was given the messages, so the
        # k-th report of this batch settles its k-th number.
        numbers = itertools.count(self._number(len(messages)))

        def delivered(err: KafkaError | None, msg: Message) -> None:
            self._delivered(err, msg, next(numbers))

        pending = messages  # not queued yet
        try:
            while pending:
                queued = self._producer.produce_batch(
                    topic, pending, partition=partition, on_delivery=delivered
                )
                if queued == len(pending):
                    pending = []
                    break
                pending = [m for m in pending if "_error" in m]
                for message in pending:
                    error = cast(KafkaError, message.pop("_error"))
                    if error.code() != KafkaError._QUEUE_FULL:
                        raise DeliveryError(f"cannot queue a message for {topic}: {error}")
                self._producer.poll(0.05)
        except BaseException:
            for _ in pending:  # never queued: nothing will report them
                self._settle(next(numbers))
            raise
        if self._poll_after_produce:
            self._producer.poll(0)

    def _number(self, count: int) -> int:
        """Number `count` messages about to be queued; return the first number."""
        with self._tallying:
            first = self._queued
            self._queued += count
        return first

    def _delivered(self, err: KafkaError | None, msg: Message, number: int) -> None:
        topic = msg.topic() or "?"
        with self._tallying:  # a flush in a thread and a poll on the loop both call back
            self._settle_locked(number)
            if err is None:
                self.acked[topic] += 1
                return
            self.failed[topic] += 1
            self._refused.append(number)
            if self._first_failed is None or number < self._first_failed:
                self._first_failed = number
        DELIVERY_FAILURES.labels(topic).inc()
        log.error("delivery to %s partition %s failed: %s", topic, msg.partition(), err)

    def _settle(self, number: int) -> None:
        with self._tallying:
            self._settle_locked(number)

    def _settle_locked(self, number: int) -> None:
        if number != self._settled_below:
            self._settled_ahead.add(number)
            return
        number += 1
        while number in self._settled_ahead:
            self._settled_ahead.remove(number)
            number += 1
        self._settled_below = number

    def mark(self) -> int:
        """Return a mark that `settled` compares with: it covers every message queued so far."""
        return self._queued

    def refused_since(self, since: int, mark: int | None = None) -> int:
        """How many of the messages numbered from `since` (a `mark`) to `mark` (default: all
        queued) Kafka refused."""
        end = self._queued if mark is None else mark
        with self._tallying:
            return sum(since <= n < end for n in self._refused)

    async def settled(self, mark: int, timeout_s: float = 30.0, *, since: int = 0) -> None:
        """Wait until Kafka acknowledged every message queued before `mark`, serving callbacks.

        Raise DeliveryError if Kafka refused one of those messages (with `since`, one queued
        from that mark on: a long-lived caller's earlier refusals are not its current work's),
        or after `timeout_s`. Messages queued meanwhile are not waited for.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self._producer.poll(0)
            if (
                self._first_failed is not None
                and self._first_failed < mark
                and (since == 0 or self.refused_since(since, mark))
            ):
                raise DeliveryError(f"Kafka refused messages: {dict(self.failed)}")
            if self._settled_below >= mark:
                return
            if time.monotonic() > deadline:
                raise DeliveryError(
                    f"{mark - self._settled_below} or more messages still unacknowledged "
                    f"after {timeout_s:.0f} s"
                )
            await asyncio.sleep(SETTLED_POLL_S)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery callbacks."""
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0, *, since: int | None = None) -> None:
        """Wait until every queued message is acknowledged or failed; raise DeliveryError on loss
        (with `since`, a mark: only of the messages queued from it on)."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(
                f"{remaining} messages still unacknowledged after {timeout_s:.0f} s"
            )
        refused = sum(self.failed.values()) if since is None else self.refused_since(since)
        if refused:
            raise DeliveryError(f"Kafka refused {refused} messages: {dict(self.failed)}")

    def partitions(self, topic: str, timeout_s: float = 10.0) -> int:
        """Return the partition count of `topic` from broker metadata; raise DeliveryError if absent."""
        try:
            metadata = self._producer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise DeliveryError(f"cannot read metadata of {topic}: {exc.args[0].str()}") from exc
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise DeliveryError(f"topic {topic} not found; run `python -m streams topics create`")
        return len(info.partitions)
