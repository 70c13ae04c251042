"""The `sink_fundamentals` agent: statements from `md.fundamentals.v1` into `fundamentals`.

Statements are few (a refresh of the S&P 500 is some 25k), so one upsert per buffered batch is
plenty; a statement replaces the stored one of its key only if it is as recent (`ts_event`),
so a replayed topic never rolls a restatement back. Input is acknowledged once committed; a
database outage is retried with backoff without acknowledging anything.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import Any, Final

import faust

from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError
from shared.models import FundamentalStatement
from shared.postgres import ReusedConnection
from shared.settings import SinkSettings, load_settings
from shared.times import time_of
from streams.app import Worker, manual_acks
from streams.upserts import Upserts

log = logging.getLogger(__name__)

COMPONENT: Final = "worker.sink_fundamentals"
BATCH: Final = 500
UPSERT_SQL: Final = """
insert into fundamentals
    (symbol, statement, period, fiscal_date, provider, body, ts_event, ts_recv)
values (%s, %s, %s, %s, %s, %s::jsonb, %s, %s)
on conflict (symbol, statement, period, fiscal_date, provider) do update set
    body = excluded.body, ts_event = excluded.ts_event, ts_recv = excluded.ts_recv
where excluded.ts_event >= fundamentals.ts_event
"""


def _row(s: FundamentalStatement) -> tuple[object, ...]:
    return (
        s.symbol,
        s.statement,
        s.period,
        date.fromisoformat(s.fiscal_date),
        s.provider,
        s.body.decode(),
        time_of(s.ts_event_us),  # exactly: a float of seconds drops microseconds
        time_of(s.ts_recv_us),
    )


class FundamentalsSink:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.upserts = Upserts(ReusedConnection(worker.database_url), UPSERT_SQL, "statements")
        self.dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)
        self.events: list[Any] = []
        self.rows: list[tuple[object, ...]] = []
        self.lock = asyncio.Lock()

    async def add(self, event: faust.EventT[bytes]) -> None:
        try:
            row = _row(self.worker.codec.decode_fundamental(event.value))
        except (DecodeError, ValueError) as exc:  # ValueError: a body or date that is not one
            self.dead_letters.reject_event(event, "undecodable", str(exc))
            await asyncio.to_thread(self.worker.publisher.flush)
            event.ack()
            return
        self.events.append(event)
        self.rows.append(row)
        if len(self.rows) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered, retrying outages; rows the database refuses for good become
        dead letters; then acknowledge the input."""
        async with self.lock:
            events, self.events = self.events, []
            rows, self.rows = self.rows, []
            refused = await self.upserts.write(rows)
            for k, reason in refused:
                self.dead_letters.reject_event(events[k], "refused_by_database", reason)
            if refused:
                await asyncio.to_thread(self.worker.publisher.flush)
            for event in events:
                event.ack()


def install(worker: Worker) -> None:
    """Declare `sink_fundamentals` and its flush timer on the app."""
    sink = FundamentalsSink(worker)

    @worker.app.agent(worker.fundamentals, name="sink_fundamentals")
    async def sink_fundamentals(stream: faust.StreamT[bytes]) -> None:
        async for event in manual_acks(stream).events():
            await sink.add(event)

    @worker.app.timer(interval=load_settings(SinkSettings).flush_interval_s)
    async def flush_fundamentals() -> None:
        await sink.flush()
