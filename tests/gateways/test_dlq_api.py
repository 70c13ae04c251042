"""Dead letters as an operator meets them: a garbage message on md.trades.v1 is rejected by a
worker, kept by store_dead_letters, listed by `GET /ops/dlq` and replayed to where it came from
by `POST /ops/dlq/{id}/replay`; one from a connector's file cannot be replayed; a dead letter
Kafka delivers twice is kept once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import Producer
from conftest import RunningWorker, eventually, http_request, read_topic

from shared.codec import Codec
from shared.models import DeadLetter
from shared.topics import DLQ, FUNDAMENTALS, TRADES

OPS_KEY = "ops-key-6e2b"
GARBAGE = b"\x00\x00\x00\x00\x07not an avro trade batch"


def produce(
    bootstrap: str, topic: str, value: bytes, key: bytes, partition: int = 0
) -> tuple[int, int]:
    """Produce one message; return its partition and offset."""
    placed: list[tuple[int, int]] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(
        topic,
        value,
        key=key,
        partition=partition,
        on_delivery=lambda e, m: placed.append((m.partition(), m.offset())) if e is None else None,
    )
    assert producer.flush(10) == 0
    return placed[0]


def ours(api: str, component: str, source: str, partition: int, offset: int) -> list[Any]:
    listed = http_request(f"{api}/ops/dlq?component={component}&limit=1000", key=OPS_KEY)
    return [
        d
        for d in listed.json()["dead_letters"]
        if (d["source"], d["source_partition"], d["source_offset"]) == (source, partition, offset)
    ]


async def test_a_rejected_message_is_listed_and_replayed_to_its_topic_once(
    bootstrap: str,
    database_url: str,
    start_worker: Callable[..., RunningWorker],
    start_api: Callable[..., str],
) -> None:
    start_worker(
        app_id=f"dlq-{uuid.uuid4().hex[:8]}",
        MS_WORKER_AGENTS="tally_trades,sink_fundamentals,store_dead_letters",
    )
    api = start_api(database_url, MS_API_OPS_KEYS=OPS_KEY)
    key = f"bad-{uuid.uuid4().hex[:8]}".encode()
    partition, offset = produce(bootstrap, FUNDAMENTALS, GARBAGE, key, partition=1)
    trades_at = produce(bootstrap, TRADES, GARBAGE, key, partition=2)
    fundamentals = "worker.sink_fundamentals"

    await eventually(
        lambda: (
            len(ours(api, fundamentals, FUNDAMENTALS, partition, offset)) == 1
            and len(ours(api, "worker.tally_trades", TRADES, *trades_at)) == 1
        ),
        timeout_s=60,
        what="both listed",
    )
    (letter,) = ours(api, fundamentals, FUNDAMENTALS, partition, offset)
    (trades_letter,) = ours(api, "worker.tally_trades", TRADES, *trades_at)
    counts = http_request(f"{api}/ops/dlq", key=OPS_KEY).json()["counts"]
    replayed = http_request(f"{api}/ops/dlq/{letter['id']}/replay", "POST", key=OPS_KEY)
    again = http_request(f"{api}/ops/dlq/{letter['id']}/replay", "POST", key=OPS_KEY)
    folded = http_request(f"{api}/ops/dlq/{trades_letter['id']}/replay", "POST", key=OPS_KEY)

    assert letter["reason"] == "undecodable" and letter["replayable"] is True
    assert letter["payload_bytes"] == len(GARBAGE) and letter["replayed_at"] is None
    assert {(c["component"], c["reason"], c["count"]) for c in counts} >= {
        (fundamentals, "undecodable", 1),
        ("worker.tally_trades", "undecodable", 1),
    }
    assert replayed.status == 202 and replayed.json()["replayed_to"] == FUNDAMENTALS
    assert again.status == 409 and "already replayed" in again.json()["error"]
    assert trades_letter["replayable"] is False
    assert folded.status == 409 and "folded into bars twice" in folded.json()["error"]
    copies = [
        m
        for m in read_topic(
            bootstrap, FUNDAMENTALS, lambda ms: sum(m.key() == key for m in ms) >= 2
        )
        if m.key() == key
    ]
    assert [(m.partition(), m.value()) for m in copies] == [(partition, GARBAGE)] * 2
    # Still garbage, so rejected again: a dead letter of its own, of the replayed message.
    replay_offset = copies[1].offset()
    await eventually(
        lambda: len(ours(api, fundamentals, FUNDAMENTALS, partition, replay_offset)) == 1,
        timeout_s=30,
        what="rejected again",
    )
    (first,) = ours(api, fundamentals, FUNDAMENTALS, partition, offset)
    assert first["replayed_to"] == FUNDAMENTALS and first["replayable"] is False


async def test_a_connectors_dead_letter_is_not_replayable_and_a_redelivery_is_kept_once(
    bootstrap: str,
    codec: Codec,
    database_url: str,
    start_worker: Callable[..., RunningWorker],
    start_api: Callable[..., str],
) -> None:
    start_worker(app_id=f"dlq-{uuid.uuid4().hex[:8]}", MS_WORKER_AGENTS="store_dead_letters")
    api = start_api(database_url, MS_API_OPS_KEYS=OPS_KEY)
    marker = uuid.uuid4().hex
    letter = DeadLetter(
        component="connector.replay",
        reason="bad_price",
        detail=f"price 'NaN' is not a finite number ({marker})",
        source="data/aapl-2026-11-30.csv",
        payload=b"2026-11-30T14:30:00.104Z,AAPL,NaN,100",
        ts_event_us=1_796_049_000_104_000,
        ts_recv_us=1_796_049_000_311_208,
        line_number=17,
    )
    message = codec.encode_dead_letter(letter)
    for _ in range(2):  # a producer's retry: the same message twice
        produce(bootstrap, DLQ, message, b"connector.replay")

    def stored() -> list[tuple[int, str | None]]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "select id, replayed_to from dead_letters where detail like %s", (f"%{marker}%",)
            ).fetchall()
        return rows

    await eventually(lambda: len(stored()) == 1, timeout_s=60, what="the dead letter stored")
    listed = http_request(f"{api}/ops/dlq?component=connector.replay", key=OPS_KEY).json()
    ((row_id, _),) = stored()
    refused = http_request(f"{api}/ops/dlq/{row_id}/replay", "POST", key=OPS_KEY)

    mine = [d for d in listed["dead_letters"] if d["id"] == row_id]
    assert mine and mine[0]["line_number"] == 17 and mine[0]["replayable"] is False
    assert refused.status == 409 and "data/aapl-2026-11-30.csv" in refused.json()["error"]
    assert http_request(f"{api}/ops/dlq/999999999/replay", "POST", key=OPS_KEY).status == 404
    assert stored() == [(row_id, None)]
