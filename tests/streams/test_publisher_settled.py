"""Publisher.settled: wait for what was queued before a mark while producing goes on."""

from __future__ import annotations

import pytest

from shared.errors import DeliveryError
from shared.publisher import Publisher
from shared.settings import KafkaSettings
from shared.topics import BARS


def _unreachable(client_id: str) -> dict[str, object]:
    """Producer settings for a broker nobody listens on, without librdkafka logging each retry."""
    return KafkaSettings(bootstrap="127.0.0.1:9").producer_config(client_id) | {"log_level": 0}


def _messages(first: int, count: int) -> list[dict[str, object]]:
    return [
        {"value": f"v{i}".encode(), "key": f"k{i % 7}".encode()}
        for i in range(first, first + count)
    ]


async def test_publisher_settled_mark_covers_messages_before_it_all_acked(bootstrap: str) -> None:
    # Arrange: batches to every partition of the bar topic, and a single message
    config = KafkaSettings(bootstrap=bootstrap).producer_config("test-settled")
    publisher = Publisher(config, poll_after_produce=False)
    for partition in range(3):
        publisher.produce_batch(BARS, partition, _messages(partition * 500, 500))
    publisher.produce(BARS, b"single", partition=1)

    # Act: mark, queue more behind the mark, then wait for the mark only
    mark = publisher.mark()
    publisher.produce_batch(BARS, 2, _messages(1500, 500))
    await publisher.settled(mark)

    # Assert: everything before the mark is acknowledged; the rest is not lost either
    assert publisher.acked[BARS] >= 1501
    publisher.flush()
    assert publisher.acked[BARS] == 2001 and not publisher.failed


async def test_publisher_settled_nothing_queued_returns_at_once() -> None:
    # Arrange: a broker nobody listens on; nothing is queued
    publisher = Publisher(_unreachable("test-idle"))

    # Act / Assert: no message precedes the mark, so there is nothing to wait for
    await publisher.settled(publisher.mark(), timeout_s=0.5)


async def test_publisher_settled_broker_unreachable_raises_after_timeout() -> None:
    # Arrange: a message queued for a broker nobody listens on
    publisher = Publisher(_unreachable("test-down"))
    publisher.produce(BARS, b"stuck", partition=0)

    # Act / Assert
    with pytest.raises(DeliveryError, match="unacknowledged"):
        await publisher.settled(publisher.mark(), timeout_s=0.3)
