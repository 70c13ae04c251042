"""`GET /gaps`: the gaps found in the bars and what became of them, newest first, for readers
who must know which history is whole.

`?symbol=&interval=&status=open|queued|repaired|failed&start=&end=&limit=` (all optional;
`start`/`end` bound the gaps' spans, RFC 3339 or microseconds; `limit` 1 to 1,000, default
100). Takes a read API key.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from gateways.keyed import KeyGuard
from gateways.params import BadRequestError, parse_limit, parse_time
from gateways.read_pool import database_answers
from shared.status import json_response
from shared.symbols import symbol_problem
from shared.times import micros_of, rfc3339

STATUSES: Final = ("open", "queued", "repaired", "failed")
FIELDS: Final = (
    "id", "instrument", "interval", "start_ts", "end_ts", "cause", "tier", "provider", "detail",
    "detected_at", "status", "updated_at",
)  # fmt: skip
TIMES: Final = frozenset({"start_ts", "end_ts", "detected_at", "updated_at"})


def gap_filters(query: web.Request) -> tuple[sql.Composable, dict[str, object]]:
    """The where clause and parameters of a `GET /gaps` query; raise BadRequestError."""
    params: dict[str, object] = {}
    clauses: list[sql.Composable] = [sql.SQL("true")]
    q = query.query
    if (symbol := q.get("symbol")) is not None:
        if problem := symbol_problem(symbol):
            raise BadRequestError(problem)
        clauses.append(sql.SQL("instrument = %(symbol)s"))
        params["symbol"] = symbol
    if (interval := q.get("interval")) is not None:
        clauses.append(sql.SQL("interval = %(interval)s"))
        params["interval"] = interval
    if (status := q.get("status")) is not None:
        if status not in STATUSES:
            raise BadRequestError(f"status is one of {', '.join(STATUSES)}")
        clauses.append(sql.SQL("status = %(status)s"))
        params["status"] = status
    if "start" in q:
        clauses.append(sql.SQL("end_ts > to_timestamp(%(start)s / 1e6)"))
        params["start"] = parse_time(q["start"], "start")
    if "end" in q:
        clauses.append(sql.SQL("start_ts < to_timestamp(%(end)s / 1e6)"))
        params["end"] = parse_time(q["end"], "end")
    params["limit"] = parse_limit(q.get("limit"), 100, 1_000)
    return sql.SQL(" and ").join(clauses), params


def gap_json(row: tuple[Any, ...]) -> dict[str, object]:
    gap = dict(zip(FIELDS, row, strict=True))
    for name in TIMES:
        gap[name] = rfc3339(micros_of(gap[name]))
    gap["duration_s"] = (micros_of(row[4]) - micros_of(row[3])) / 1e6
    return gap


def add_gap_routes(app: web.Application, pool: AsyncConnectionPool, readers: KeyGuard) -> None:
    async def gaps(request: web.Request) -> web.Response:
        try:
            where, params = gap_filters(request)
        except BadRequestError as exc:
            return json_response({"error": str(exc)}, 400)
        query = sql.SQL(
            "select {} from gaps where {} order by start_ts desc, id desc limit %(limit)s"
        ).format(sql.SQL(", ").join(map(sql.Identifier, FIELDS)), where)
        async with pool.connection() as db:
            rows = await (await db.execute(query, params)).fetchall()
        return json_response({"gaps": [gap_json(r) for r in rows]})

    app.router.add_get("/gaps", readers(database_answers(gaps)))
