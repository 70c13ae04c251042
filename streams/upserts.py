"""Upserting rows in one transaction, through database outages, with the refused rows named.

The sinks of small, keyed tables (`fundamentals`, `latest_trades`, `latest_quotes`) write a
batch of rows at a time. An outage is retried with backoff until the batch is in; if the
database refuses the batch (a value it will never take), the rows are written one by one so
that only the refused ones become dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any, Final

import psycopg

from shared.postgres import ReusedConnection

log = logging.getLogger(__name__)

BACKOFF_CAP_S: Final = 30.0

Row = Sequence[object]


class Upserts:
    def __init__(self, connection: ReusedConnection, sql: str, what: str) -> None:
        self.connection = connection
        self.sql = sql
        self.what = what  # what a row is, for the log: "statements", "prices"

    async def write(self, rows: Sequence[Row]) -> list[tuple[int, str]]:
        """Upsert `rows` in one transaction, retrying outages with backoff; if the database
        refuses the batch, write row by row and return the refused ones (index, reason)."""
        attempt = 0
        while rows:
            try:
                connection = await self.connection.get()
                try:
                    async with connection.transaction(), connection.cursor() as cursor:
                        await cursor.executemany(self.sql, rows)
                    return []
                except psycopg.OperationalError:
                    raise
                except psycopg.Error:
                    return await self._one_by_one(connection, rows)
            except psycopg.OperationalError as exc:
                delay = random.uniform(0, min(BACKOFF_CAP_S, 0.25 * 2**attempt))
                attempt += 1
                log.warning(
                    "cannot write %d %s (%s); retrying in %.1f s", len(rows), self.what, exc, delay
                )
                await asyncio.sleep(delay)
        return []

    async def _one_by_one(
        self, connection: psycopg.AsyncConnection[Any], rows: Sequence[Row]
    ) -> list[tuple[int, str]]:
        refused = []
        for k, row in enumerate(rows):
            try:
                async with connection.transaction():
                    await connection.execute(self.sql, row)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                refused.append((k, f"{type(exc).__name__}: {exc}".strip()))
        return refused
