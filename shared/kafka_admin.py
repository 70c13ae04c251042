"""Create and describe our topics with Kafka's admin API (idempotent), and measure consumer
groups' lag per partition (`group_lags`, behind `python -m streams groups describe` and
`GET /health/detailed`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
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


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One row of `kafka-consumer-groups --describe`: how far a group is behind on a partition.

    `committed` and `lag` are None where the group holds the partition but committed nothing
    yet; the member fields are None where no member holds it. Offsets count messages.
    """

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None
    consumer_id: str | None
    host: str | None
    client_id: str | None
    members: int  # in the group, holding any partition or none


def _member_of(description: object) -> tuple[int, dict[tuple[str, int], tuple[str, str, str]]]:
    """The group's member count and who holds each assigned partition."""
    members = list(getattr(description, "members", None) or [])
    holders = {}
    for m in members:
        assignment = getattr(m, "assignment", None)
        for tp in getattr(assignment, "topic_partitions", None) or []:
            holders[(str(tp.topic), int(tp.partition))] = (m.member_id, m.host, m.client_id)
    return len(members), holders


def end_offsets(
    bootstrap: str, partitions: Collection[tuple[str, int]], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """Return each partition's end offset (the offset the next message will get).

    ListOffsets gives it on Kafka. Tansu's ListOffsets answers the last batch's base offset + 1
    instead, short of the true end, while its fetch responses carry the true high watermark; so
    the last batch is fetched too and the higher of the two kept. Raise KafkaException.
    """
    if not partitions:
        return {}
    admin = _admin(bootstrap)
    latest = admin.list_offsets(
        {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},  # type: ignore[no-untyped-call]
        request_timeout=timeout_s,
    )
    ends = {(str(tp.topic), int(tp.partition)): f.result().offset for tp, f in latest.items()}
    return _fetched_ends(bootstrap, ends, timeout_s)


def _fetched_ends(
    bootstrap: str, listed: dict[tuple[str, int], int], timeout_s: float
) -> dict[tuple[str, int], int]:
    """Raise listed ends to the high watermarks of one fetch from each non-empty partition's
    last listed offset; keep the listed end of a partition whose fetch did not answer in time."""
    wanted = {key: end for key, end in listed.items() if end > 0}
    if not wanted:
        return dict(listed)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "marketstream-lag",
            "group.id": "marketstream-lag",  # assigned, never joined or committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 10,
            "max.partition.fetch.bytes": 1,  # the broker still returns one whole batch
        }
    )
    ends = dict(listed)
    try:
        consumer.assign([TopicPartition(t, p, end - 1) for (t, p), end in wanted.items()])
        deadline = time.monotonic() + timeout_s
        while wanted and time.monotonic() < deadline:
            consumer.consume(100, 0.05)
            for key in list(wanted):
                _, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
                if high >= 0:  # OFFSET_INVALID until the partition's first fetch response
                    ends[key] = max(ends[key], high)
                    del wanted[key]
        if wanted:
            log.warning("no fetch answered in %.1f s for %s: their listed ends", timeout_s, wanted)
    finally:
        consumer.close()
    return ends


def group_lags(
    bootstrap: str, groups: Collection[str] | None = None, timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Return the lag of each partition the named groups (default: every group) committed
    offsets for or hold, sorted by group, topic and partition; groups that do not exist are
    left out. Raise TransientError if the broker does not answer within about `timeout_s`.
    """
    admin = _admin(bootstrap)
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout_s).result()
        names = sorted(
            g.group_id for g in listed.valid if groups is None or g.group_id in set(groups)
        )
        if not names:
            return []
        described = admin.describe_consumer_groups(names, request_timeout=timeout_s)
        committed_futures = {
            name: admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(name)], request_timeout=timeout_s
            )[name]
            for name in names
        }
        committed: dict[str, dict[tuple[str, int], int | None]] = {}
        membership = {}
        for name in names:
            count, holders = _member_of(described[name].result())
            membership[name] = (count, holders)
            offsets: dict[tuple[str, int], int | None] = dict.fromkeys(holders)
            for tp in committed_futures[name].result().topic_partitions or []:
                if tp.error is None and tp.offset >= 0:
                    offsets[(str(tp.topic), int(tp.partition))] = int(tp.offset)
            committed[name] = offsets
        ends = end_offsets(bootstrap, {key for o in committed.values() for key in o}, timeout_s)
    except KafkaException as exc:
        raise TransientError(f"cannot describe consumer groups at {bootstrap}: {exc}") from exc
    rows = []
    for name in names:
        count, holders = membership[name]
        for (topic, partition), offset in sorted(committed[name].items()):
            end = ends[(topic, partition)]
            holder = holders.get((topic, partition))
            rows.append(
                PartitionLag(
                    group=name,
                    topic=topic,
                    partition=partition,
                    committed=offset,
                    end=end,
                    lag=None if offset is None else end - offset,
                    consumer_id=holder[0] if holder else None,
                    host=holder[1] if holder else None,
                    client_id=holder[2] if holder else None,
                    members=count,
                )
            )
    return rows
