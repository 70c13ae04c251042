"""The Publisher on a real broker: batches land on their partition, in full, in order, even
past librdkafka's queue limit."""

from __future__ import annotations

from conftest import at_least, read_topic

from shared.publisher import Publisher
from shared.settings import KafkaSettings
from shared.topics import BARS


def test_produce_batch_retries_what_a_full_queue_refuses(bootstrap: str) -> None:
    topic = BARS  # made by the fixture, with 3 partitions
    config = KafkaSettings(bootstrap=bootstrap).producer_config("test-batch")
    publisher = Publisher(config | {"queue.buffering.max.messages": 100})
    for partition in range(3):
        messages: list[dict[str, object]] = [
            {"value": f"v{i}".encode(), "key": f"k{i % 7}".encode()}
            for i in range(partition, 2500, 3)
        ]
        publisher.produce_batch(topic, partition, messages)
    publisher.flush()
    assert publisher.acked[topic] == 2500 and not publisher.failed
    received = read_topic(bootstrap, topic, at_least(2500))
    assert sorted(m.value() for m in received) == sorted(f"v{i}".encode() for i in range(2500))
    for partition in range(3):
        values = [int(m.value()[1:]) for m in received if m.partition() == partition]
        assert values == list(range(partition, 2500, 3))
