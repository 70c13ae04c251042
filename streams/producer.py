"""A confluent-kafka producer that counts what Kafka acknowledged and what it refused."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.errors import DeliveryError
from streams.metrics import DELIVERY_FAILURES

log = logging.getLogger(__name__)

OnAck = Callable[[], None]


class Publisher:
    """Produce with acks=all; `flush` raises DeliveryError if anything was not acknowledged."""

    def __init__(self, config: dict[str, object]) -> None:
        self._producer = Producer(config)
        self.acked: Tally[str] = Tally()
        self.failed: Tally[str] = Tally()

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
            if err is None:
                self.acked[topic] += 1
                if on_ack is not None:
                    on_ack()
                return
            self.failed[topic] += 1
            DELIVERY_FAILURES.labels(topic).inc()
            log.error("delivery to %s partition %s failed: %s", topic, msg.partition(), err)

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
