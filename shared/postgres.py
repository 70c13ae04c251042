"""One PostgreSQL connection kept for reuse by a writer or reader that runs often."""

from __future__ import annotations

from typing import Any

import psycopg


class ReusedConnection:
    """Open on first use and again after the connection was closed or lost (psycopg counts a
    broken connection as closed); callers turn psycopg's errors into their own."""

    def __init__(self, url: str, *, autocommit: bool = False, connect_timeout: int = 5) -> None:
        self.url = url
        self.autocommit = autocommit
        self.connect_timeout = connect_timeout
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=self.connect_timeout, autocommit=self.autocommit
            )
        return self._connection

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
