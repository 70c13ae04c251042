"""A confluent-kafka producer that counts what Kafka acknowledged and what it refused."""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Callable
from typing import cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shared.errors import DeliveryError
from shared.metrics import ACKED_MESSAGES, DELIVERY_FAILURES

log = logging.getLogger(__name__)

OnAck = Callable[[], None]


class Publisher:
    """Produce with acks=all; `flush` raises DeliveryError if anything was not acknowledged."""

    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self.acked: Tally[str] = Tally()
        self.failed: Tally[str] = Tally()
        ACKED_MESSAGES.track(self.acked)
        self._partition_counts: dict[str, int] = {}
        self._tallying = threading.Lock()

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

        def delivered(err: KafkaError | None, msg: Message) -> None:
            self._delivered(err, msg)
            if err is None and on_ack is not None:
                on_ack()

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
        while messages:
            queued = self._producer.produce_batch(
                topic, messages, partition=partition, on_delivery=self._delivered
            )
            if queued == len(messages):
                break
            messages = [m for m in messages if "_error" in m]
            for message in messages:
                error = cast(KafkaError, message.pop("_error"))
                if error.code() != KafkaError._QUEUE_FULL:
                    raise DeliveryError(f"cannot queue a message for {topic}: {error}")
            self._producer.poll(0.05)
        self._producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        topic = msg.topic() or "?"
        if err is None:
            with self._tallying:  # a flush in a thread and a poll on the loop both call back
                self.acked[topic] += 1
            return
        with self._tallying:
            self.failed[topic] += 1
        DELIVERY_FAILURES.labels(topic).inc()
        log.error("delivery to %s partition %s failed: %s", topic, msg.partition(), err)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery callbacks."""
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued message is acknowledged or failed; raise DeliveryError on loss."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(
                f"{remaining} messages still unacknowledged after {timeout_s:.0f} s"
            )
        if sum(self.failed.values()):
            raise DeliveryError(f"Kafka refused messages: {dict(self.failed)}")

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
