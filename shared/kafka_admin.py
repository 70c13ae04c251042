"""Create and describe our topics with Kafka's admin API (idempotent)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from shared.errors import TransientError
from shared.topics import TopicSpec

log = logging.getLogger(__name__)

NO_TOPIC_ID: Final = (
    "AAAAAAAAAAAAAAAAAAAAAA"  # the zero UUID, as a broker without topic ids sends it
)


@dataclass(frozen=True, slots=True)
class TopicState:
    """What the broker reports about one topic."""

    name: str
    partitions: int
    configs: dict[str, str]


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "marketstream-admin"})


def create_topics(
    bootstrap: str, specs: tuple[TopicSpec, ...], timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; return their names. Existing topics are kept."""
    admin = _admin(bootstrap)
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, 1, config=s.configs()) for s in specs],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TransientError(f"cannot create topic {name} at {bootstrap}: {exc}") from exc
    return created


def describe_topics(bootstrap: str, names: list[str], timeout_s: float = 10.0) -> list[TopicState]:
    """Return partitions and configs of the named topics that exist."""
    admin = _admin(bootstrap)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TransientError(f"broker {bootstrap} unreachable: {exc}") from exc
    present = [n for n in names if n in metadata.topics]
    futures = admin.describe_configs([ConfigResource("topic", n) for n in present])
    configs = {
        res.name: {c.name: c.value for c in f.result().values()} for res, f in futures.items()
    }
    return [TopicState(n, len(metadata.topics[n].partitions), configs.get(n, {})) for n in present]


def partition_count(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int:
    """Return how many partitions `topic` has; raise TransientError if it is missing."""
    states = describe_topics(bootstrap, [topic], timeout_s)
    if not states:
        raise TransientError(f"topic {topic} does not exist; run `python -m streams topics create`")
    return states[0].partitions


@dataclass(frozen=True, slots=True)
class TopicIncarnation:
    """Which incarnation of a topic the broker holds: its id and each partition's end offset.

    `topic_id` is None where the broker does not give topic ids (before Kafka 2.8).
    """

    topic_id: str | None
    end_offsets: dict[int, int]


def topic_incarnation(bootstrap: str, topic: str, timeout_s: float = 10.0) -> TopicIncarnation:
    """Return the topic's id and end offsets; raise TransientError if the broker cannot tell."""
    admin = _admin(bootstrap)
    try:
        (described,) = admin.describe_topics(
            TopicCollection([topic]), request_timeout=timeout_s
        ).values()
        description = described.result()
        latest = admin.list_offsets(
            {TopicPartition(topic, p.id): OffsetSpec.latest() for p in description.partitions},  # type: ignore[no-untyped-call]
            request_timeout=timeout_s,
        )
        end_offsets = {tp.partition: future.result().offset for tp, future in latest.items()}
    except KafkaException as exc:
        raise TransientError(f"cannot describe topic {topic} at {bootstrap}: {exc}") from exc
    topic_id = str(description.topic_id) if description.topic_id is not None else None
    return TopicIncarnation(None if topic_id == NO_TOPIC_ID else topic_id, end_offsets)
