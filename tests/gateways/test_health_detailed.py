"""`GET /health/detailed` and `python -m streams groups describe` against the real broker and
PostgreSQL: the same lag, exactly, for a group with a known committed offset; `down` (503)
when the database cannot be reached."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import run_module, wait_http

from streams.embedded.ports import free_port

PRODUCED = 12  # on partition 0: four batches of one, then one batch of eight
COMMITTED = 5


@pytest.fixture
def lagging_group(bootstrap: str, unique_topic: str, group_id: str) -> Iterator[str]:
    """A live member of `group_id` that read all of partition 0 of `unique_topic` but committed
    offset COMMITTED, so the group is PRODUCED - COMMITTED messages behind there."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(unique_topic, 2, 1)])[unique_topic].result(timeout=10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for i in range(4):  # a batch each
        producer.produce(unique_topic, f"single-{i}".encode(), partition=0)
        producer.flush(10)
    for i in range(PRODUCED - 4):  # one batch: Tansu's ListOffsets reports its base + 1
        producer.produce(unique_topic, f"batched-{i}".encode(), partition=0)
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([unique_topic])
    read = 0
    deadline = time.monotonic() + 30
    while read < PRODUCED:
        assert time.monotonic() < deadline, f"read only {read} of {PRODUCED} in 30 s"
        read += sum(1 for m in consumer.consume(100, 0.2) if m.error() is None)
    consumer.commit(offsets=[TopicPartition(unique_topic, 0, COMMITTED)], asynchronous=False)
    yield unique_topic
    consumer.close()


def test_groups_describe_and_health_detailed_report_the_exact_lag_of_a_group(
    bootstrap: str,
    database_url: str,
    group_id: str,
    lagging_group: str,
    start_api: Callable[..., str],
) -> None:
    url = start_api(database_url, MS_API_HEALTH_GROUPS=group_id, MS_API_HEALTH_CHECK_TIMEOUT_S="10")

    described = run_module(
        ["streams", "groups", "describe", "--group", group_id], {"MS_KAFKA_BOOTSTRAP": bootstrap}
    )
    body = orjson.loads(wait_http(f"{url}/health/detailed"))

    assert described.returncode == 0, described.stderr
    rows = [orjson.loads(line) for line in described.stdout.splitlines()]
    (cli_row,) = [r for r in rows if r["topic"] == lagging_group and r["partition"] == 0]
    assert (cli_row["group"], cli_row["committed"], cli_row["end"], cli_row["lag"]) == (
        group_id,
        COMMITTED,
        PRODUCED,
        PRODUCED - COMMITTED,
    )
    assert body["status"] == "healthy", body["reasons"]
    checks = body["checks"]
    assert checks["kafka"]["ok"] and checks["database"]["ok"]
    assert checks["kafka"]["response_ms"] >= 0 and checks["database"]["response_ms"] >= 0
    lag = checks["consumer_lag"]
    assert lag["ok"] and {r["group"] for r in lag["partitions"]} == {group_id}
    (api_row,) = [r for r in lag["partitions"] if r["partition"] == 0]
    who = ("consumer_id", "host", "client_id")  # the CLI's, not for callers without a key
    assert api_row == {k: v for k, v in cli_row.items() if k not in who}
    assert checks["backfill"]["depth"] == {"T0": 0, "T1": 0, "T2": 0}
    assert checks["backfill"]["oldest_age_s"] == {"T0": 0.0, "T1": 0.0, "T2": 0.0}
    assert body["memory"]["rss_bytes"] > 10_000_000


def test_health_detailed_with_lag_over_the_threshold_is_degraded_with_200(
    database_url: str, group_id: str, lagging_group: str, start_api: Callable[..., str]
) -> None:
    url = start_api(
        database_url,
        MS_API_HEALTH_GROUPS=group_id,
        MS_API_HEALTH_MAX_LAG=str(PRODUCED - COMMITTED - 1),
        MS_API_HEALTH_CHECK_TIMEOUT_S="10",
    )

    body = orjson.loads(wait_http(f"{url}/health/detailed"))

    assert body["status"] == "degraded"
    assert body["reasons"] == [
        f"group {group_id} is {PRODUCED - COMMITTED} messages behind on {lagging_group}[0]"
        f" (more than {PRODUCED - COMMITTED - 1})"
    ]


def test_health_detailed_with_database_unreachable_is_down_with_503(
    start_api: Callable[..., str],
) -> None:
    port = free_port()
    url = start_api(f"postgresql://postgres:s3cret@127.0.0.1:{port}/x")

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{url}/health/detailed", timeout=15)

    assert info.value.code == 503
    body = orjson.loads(info.value.read())
    assert body["status"] == "down"
    assert body["checks"]["kafka"]["ok"] is True
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["backfill"]["ok"] is False
    assert body["reasons"] == ["database unreachable"]
    for internal in ("s3cret", str(port), "postgres", "Error", "refused"):
        assert internal not in str(body), "no internals to a caller without a key"
