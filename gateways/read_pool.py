"""The read API's PostgreSQL connections: a pool, so that concurrent readers do not queue on one
connection, opened in the background so that the API starts while the database is down."""

from __future__ import annotations

import logging
from typing import Final

import psycopg
from aiohttp import web
from aiohttp.typedefs import Handler
from psycopg_pool import AsyncConnectionPool

from shared.errors import TransientError
from shared.status import json_response

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS: Final = 15_000


def read_pool(app: web.Application, database_url: str, size: int = 4) -> AsyncConnectionPool:
    """A pool of autocommit connections, opened on the app's startup and closed on cleanup.

    Each connection is checked when taken, so a database restarted since is reconnected to.
    """
    pool = AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=size,
        open=False,
        timeout=3.0,  # a request waits at most this long for a connection, then gets a 503
        kwargs={
            "autocommit": True,
            "connect_timeout": 3,
            # a query, or a database gone quiet, holds a connection at most this long
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
        check=AsyncConnectionPool.check_connection,
        name="read-api",
    )

    async def open_pool(_: web.Application) -> None:
        await pool.open(wait=False)

    async def close_pool(_: web.Application) -> None:
        await pool.close()

    app.on_startup.append(open_pool)
    app.on_cleanup.append(close_pool)
    return pool


def database_answers(handler: Handler) -> Handler:
    """`handler`, answering 503 (and logging why) while the database cannot answer, and a
    JSON 500 (the log has the error) when it refuses a query."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (psycopg.OperationalError, TransientError) as exc:  # down, or too slow
            log.warning("%s %s: the database cannot answer: %s", request.method, request.path, exc)
            return json_response({"error": "the database cannot answer; try again"}, 503)
        except psycopg.Error:  # e.g. a table `db migrate` has not made yet: ours to fix
            log.exception("%s %s: the database refused the query", request.method, request.path)
            return json_response({"error": "internal error; the API's log says why"}, 500)

    return answer
