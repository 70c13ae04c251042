"""The backfill's ops endpoints, for operators: ask for a repair, see and requeue what failed.

- `POST /ops/backfill` with `{"instrument", "interval", "start", "end", "priority"?,
  "provider"?}` (times RFC 3339, or microseconds since the epoch): records a `manual` gap and
  queues its job (202 with both ids); the same span asked again returns the job already queued.
- `GET /ops/dlq/backfills?limit=`: the jobs that failed for good, newest first, with every
  attempt's error.
- `POST /ops/dlq/backfills/requeue/{id}`: a new job for a dead letter (202; 404 if unknown).

Every route takes an ops key (`Authorization: Bearer <key>`, `X-API-Key` or `?api_key=`) from
`MS_API_OPS_KEYS` or `MS_API_OPS_KEYS_FILE`: 401 with a JSON error without a known one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Final

import orjson
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from gateways.keyed import KeyGuard
from gateways.params import BadRequestError, parse_time
from gateways.read_pool import database_answers
from shared.backfill import queue
from shared.errors import NotFoundError
from shared.intervals import parse_interval
from shared.models import Gap, GapCause
from shared.status import json_response
from shared.symbols import symbol_problem
from shared.times import rfc3339

log = logging.getLogger(__name__)

MAX_SPAN_US: Final = 31 * 86_400_000_000  # a month: longer repairs are several requests


def parse_backfill(body: object) -> dict[str, Any]:
    """The fields of a backfill request, checked; raise BadRequestError saying what is wrong."""
    if not isinstance(body, dict):
        raise BadRequestError("the body is a JSON object with instrument, interval, start, end")
    instrument, interval = body.get("instrument"), body.get("interval")
    if not isinstance(instrument, str) or (problem := symbol_problem(instrument)):
        raise BadRequestError(
            f"instrument: {problem if isinstance(instrument, str) else 'missing'}"
        )
    try:
        parse_interval(str(interval))
    except ValueError as exc:
        raise BadRequestError(f"interval: {exc}") from None
    start_us, end_us = parse_time(body.get("start"), "start"), parse_time(body.get("end"), "end")
    if not 0 < end_us - start_us <= MAX_SPAN_US:
        raise BadRequestError("end must be after start, by at most 31 days")
    priority = body.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise BadRequestError("priority is an integer from 0 (first) to 9")
    provider = body.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise BadRequestError("provider is a provider's name, e.g. alpaca")
    return {
        "instrument": instrument,
        "interval": str(interval),
        "start_us": start_us,
        "end_us": end_us,
        "priority": priority,
        "provider": provider,
    }


def _iso(us: int | None) -> str | None:
    return None if us is None else rfc3339(us)


def dead_letter_json(letter: queue.DeadLetterJob) -> dict[str, Any]:
    body = dataclasses.asdict(letter)
    for name in ("start_us", "end_us", "failed_at_us", "requeued_at_us"):
        body[name.removesuffix("_us")] = _iso(body[name])
    return body


def add_ops_routes(app: web.Application, pool: AsyncConnectionPool, operators: KeyGuard) -> None:
    async def backfill(request: web.Request) -> web.Response:
        try:
            wanted = parse_backfill(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, BadRequestError) as exc:
            return json_response({"error": str(exc)}, 400)
        now_us = time.time_ns() // 1000
        gap = Gap(
            instrument=wanted["instrument"],
            interval=wanted["interval"],
            start_us=wanted["start_us"],
            end_us=wanted["end_us"],
            cause=GapCause.MANUAL,
            detail="asked for by POST /ops/backfill",
            detected_at_us=now_us,
            ts_recv_us=now_us,
            provider=wanted["provider"],
        )
        async with pool.connection() as db:
            recorded = await queue.record_gap(db, gap, reopen=True)
            job = await queue.enqueue(db, **wanted, gap_id=recorded.id)
        log.info("backfill asked for: job %d, %s %s", job, wanted["instrument"], wanted["interval"])
        return json_response({"job": job, "gap": recorded.id}, 202)

    async def dead_letters(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return json_response({"error": "limit is an integer"}, 400)
        async with pool.connection() as db:
            letters = await queue.list_dead_letters(db, max(1, min(limit, 1000)))
        return json_response({"dead_letters": [dead_letter_json(d) for d in letters]})

    async def requeue(request: web.Request) -> web.Response:
        try:
            dlq_id = int(request.match_info["id"])
        except ValueError:
            return json_response({"error": "the id is an integer"}, 400)
        try:
            async with pool.connection() as db:
                job = await queue.requeue_dead_letter(db, dlq_id)
        except NotFoundError as exc:
            return json_response({"error": str(exc)}, 404)
        return json_response({"job": job, "dead_letter": dlq_id}, 202)

    app.router.add_post("/ops/backfill", operators(database_answers(backfill)))
    app.router.add_get("/ops/dlq/backfills", operators(database_answers(dead_letters)))
    app.router.add_post("/ops/dlq/backfills/requeue/{id}", operators(database_answers(requeue)))
