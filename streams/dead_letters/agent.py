"""The `store_dead_letters` agent: every dead letter of md.dlq.v1 into the `dead_letters`
table, so that operators list them by component and reason (`GET /ops/dlq`) and replay one
after a fix (`POST /ops/dlq/{id}/replay`).

A dead letter is stored once however often Kafka delivers it: its row is keyed by the digest
of the message. A message on md.dlq.v1 that is no dead letter is stored as one (component
`unknown`, reason `undecodable`), so that nothing is lost; a row the database refuses is
logged and counted, never sent back to md.dlq.v1 (that would loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, Final

import faust

from shared.errors import DecodeError
from shared.metrics import DEAD_LETTERS
from shared.models import DeadLetter
from shared.postgres import ReusedConnection
from shared.settings import SinkSettings, load_settings
from shared.times import MAX_US, MIN_US, time_of
from shared.topics import DLQ
from streams.app import Worker, manual_acks
from streams.upserts import Upserts

log = logging.getLogger(__name__)

COMPONENT: Final = "worker.store_dead_letters"
BATCH: Final = 500
INSERT_SQL: Final = """
insert into dead_letters (digest, component, reason, detail, source, payload, key,
    source_partition, source_offset, line_number, ts_event, ts_recv)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
on conflict (digest) do nothing
"""


def _text(value: str) -> str:
    return value.replace("\x00", "\\0")  # PostgreSQL text holds no NUL


def row_of(message: bytes, letter: DeadLetter) -> tuple[object, ...]:
    return (
        hashlib.blake2b(message, digest_size=16).digest(),
        _text(letter.component),
        _text(letter.reason),
        _text(letter.detail),
        _text(letter.source),
        letter.payload,
        letter.key,
        letter.source_partition,
        letter.source_offset,
        letter.line_number,
        time_of(min(max(letter.ts_event_us, MIN_US), MAX_US)),  # as absurd as a feed sent it
        time_of(min(max(letter.ts_recv_us, MIN_US), MAX_US)),
    )


def undecodable(event: faust.EventT[bytes], exc: Exception) -> DeadLetter:
    """What an md.dlq.v1 message that is no dead letter is stored as."""
    stamp = event.message.timestamp
    us = int(stamp * 1e6) if stamp else 0
    return DeadLetter(
        component="unknown",
        reason="undecodable",
        detail=f"not a dead letter on {DLQ}: {exc}",
        source=event.message.topic,
        payload=bytes(event.value or b""),
        ts_event_us=us,
        ts_recv_us=us,
        source_partition=event.message.partition,
        source_offset=event.message.offset,
        key=event.message.key,
    )


class DeadLetterStore:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.upserts = Upserts(ReusedConnection(worker.database_url), INSERT_SQL, "dead letters")
        self.events: list[Any] = []
        self.rows: list[tuple[object, ...]] = []
        self.lock = asyncio.Lock()

    async def add(self, event: faust.EventT[bytes]) -> None:
        message = bytes(event.value or b"")
        try:
            letter = self.worker.codec.decode_dead_letter(message)
        except (DecodeError, ValueError) as exc:
            letter = undecodable(event, exc)
        self.events.append(event)
        self.rows.append(row_of(message, letter))
        if len(self.rows) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered (retrying outages), then acknowledge it."""
        async with self.lock:
            events, self.events = self.events, []
            rows, self.rows = self.rows, []
            for k, reason in await self.upserts.write(rows):
                DEAD_LETTERS.labels(COMPONENT, "refused_by_database").inc()
                message = events[k].message
                log.error(
                    "dead letter at %s[%d]@%d not stored: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    reason,
                )
            for event in events:
                event.ack()


def install(worker: Worker) -> None:
    """Declare `store_dead_letters` and its flush timer on the app."""
    store = DeadLetterStore(worker)
    topic = worker.app.topic(DLQ, value_serializer="raw", key_serializer="raw")

    @worker.app.agent(topic, name="store_dead_letters")
    async def store_dead_letters(stream: faust.StreamT[bytes]) -> None:
        async for event in manual_acks(stream).events():
            await store.add(event)

    @worker.app.timer(interval=load_settings(SinkSettings).flush_interval_s)
    async def flush_dead_letters() -> None:
        await store.flush()
