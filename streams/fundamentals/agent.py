"""The `sink_fundamentals` agent: statements from `md.fundamentals.v1` into `fundamentals`.

Statements are few (a refresh of the S&P 500 is some 25k), so one upsert per buffered batch is
plenty; a statement replaces the stored one of its key only if it is as recent (`ts_event`),
so a replayed topic never rolls a restatement back. Input is acknowledged once committed; a
database outage is retried with backoff without acknowledging anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, date, datetime
from typing import Any, Final

import faust
import psycopg

from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError
from shared.models import FundamentalStatement
from shared.postgres import ReusedConnection
from shared.settings import SinkSettings, load_settings
from streams.app import Worker, manual_acks

log = logging.getLogger(__name__)

COMPONENT: Final = "worker.sink_fundamentals"
BATCH: Final = 500
BACKOFF_CAP_S: Final = 30.0
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
        datetime.fromtimestamp(s.ts_event_us / 1e6, UTC),
        datetime.fromtimestamp(s.ts_recv_us / 1e6, UTC),
    )


class FundamentalsSink:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.connection = ReusedConnection(worker.database_url)
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
            refused = await self._write_until_done(rows)
            for k, reason in refused:
                self.dead_letters.reject_event(events[k], "refused_by_database", reason)
            if refused:
                await asyncio.to_thread(self.worker.publisher.flush)
            for event in events:
                event.ack()

    async def _write_until_done(self, rows: list[tuple[object, ...]]) -> list[tuple[int, str]]:
        """Upsert `rows` in one transaction, retrying outages with backoff; if the database
        refuses the batch, write row by row and return the refused ones (index, reason)."""
        attempt = 0
        while rows:
            try:
                connection = await self.connection.get()
                try:
                    async with connection.transaction(), connection.cursor() as cursor:
                        await cursor.executemany(UPSERT_SQL, rows)
                    return []
                except psycopg.OperationalError:
                    raise
                except psycopg.Error:
                    return await self._write_one_by_one(connection, rows)
            except psycopg.OperationalError as exc:
                delay = random.uniform(0, min(BACKOFF_CAP_S, 0.25 * 2**attempt))
                attempt += 1
                log.warning(
                    "cannot write %d statements (%s); retrying in %.1f s", len(rows), exc, delay
                )
                await asyncio.sleep(delay)
        return []

    @staticmethod
    async def _write_one_by_one(
        connection: psycopg.AsyncConnection[Any], rows: list[tuple[object, ...]]
    ) -> list[tuple[int, str]]:
        refused = []
        for k, row in enumerate(rows):
            try:
                async with connection.transaction():
                    await connection.execute(UPSERT_SQL, row)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                refused.append((k, f"{type(exc).__name__}: {exc}".strip()))
        return refused


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
