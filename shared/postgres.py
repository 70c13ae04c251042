"""One PostgreSQL connection kept for reuse by a writer or reader that runs often."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus


class ReusedConnection:
    """Open on first use and again after the connection was closed or lost (psycopg counts a
    broken connection as closed); callers turn psycopg's errors into their own."""

    def __init__(self, url: str, *, autocommit: bool = False, connect_timeout: int = 5) -> None:
        self.url = url
        self.autocommit = autocommit
        self.connect_timeout = connect_timeout
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._connecting = asyncio.Lock()  # two callers at once must not both connect
        # Held by callers that run transactions on the connection: two transactions at once
        # on one connection would nest (the second a savepoint of the first) and commit late.
        self.lock = asyncio.Lock()

    async def get(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:
            connection = self._connection
            if connection is None or connection.closed:
                connection = self._connection = await psycopg.AsyncConnection.connect(
                    self.url, connect_timeout=self.connect_timeout, autocommit=self.autocommit
                )
            elif (
                self.autocommit and connection.info.transaction_status == TransactionStatus.INTRANS
            ):
                await connection.rollback()  # a transaction some failure left open
            return connection

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
