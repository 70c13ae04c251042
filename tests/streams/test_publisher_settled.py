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


async def test_publisher_settled_a_batch_that_raised_leaves_no_hole_in_the_numbering(
    bootstrap: str,
) -> None:
    # Arrange: a batch librdkafka refuses outright (a value that is not bytes), then good ones
    publisher = Publisher(KafkaSettings(bootstrap=bootstrap).producer_config("test-hole"))
    with pytest.raises(TypeError):
        publisher.produce_batch(BARS, 0, [{"value": 123, "key": b"k"}])
    publisher.produce_batch(BARS, 0, _messages(0, 10))

    # Act / Assert: the mark after them settles; nothing counts as refused
    await publisher.settled(publisher.mark(), timeout_s=10)
    assert publisher.acked[BARS] == 10 and not publisher.failed


async def test_publisher_settled_raises_for_a_refused_message_before_the_mark_only() -> None:
    # Arrange: a message that times out at a broker nobody listens on
    publisher = Publisher(_unreachable("test-refused") | {"message.timeout.ms": 300})
    before = publisher.mark()
    publisher.produce(BARS, b"lost", partition=0)
    covering = publisher.mark()

    # Act / Assert: a mark from before it has nothing to wait for; one after it raises
    await publisher.settled(before, timeout_s=1)
    with pytest.raises(DeliveryError, match="refused"):
        await publisher.settled(covering, timeout_s=5)


async def test_publisher_a_refusal_fails_the_waits_that_cover_it_not_later_work() -> None:
    # Arrange: a long-lived publisher (the backfill worker's) whose one message was refused
    publisher = Publisher(_unreachable("test-refused-once") | {"message.timeout.ms": 300})
    publisher.produce(BARS, b"lost", partition=0)
    with pytest.raises(DeliveryError, match="refused"):
        await publisher.settled(publisher.mark(), timeout_s=5)

    # Act: the next job's own wait, and a flush of what came after the refusal
    since = publisher.mark()
    await publisher.settled(publisher.mark(), timeout_s=1, since=since)
    publisher.flush(1, since=since)

    # Assert: the refusal still fails what covers it
    assert publisher.refused_since(0) == 1 and publisher.refused_since(since) == 0
    with pytest.raises(DeliveryError, match="refused 1"):
        publisher.flush(1, since=0)
