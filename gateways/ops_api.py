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
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import psycopg
from aiohttp import web

from gateways.keyed import Handler, keyed
from shared.api_keys import ApiKeys
from shared.backfill import queue
from shared.errors import NotFoundError, TransientError
from shared.intervals import parse_interval
from shared.models import Gap, GapCause
from shared.postgres import ReusedConnection
from shared.status import json_response
from shared.symbols import symbol_problem
from shared.times import micros_of, rfc3339

log = logging.getLogger(__name__)

MAX_SPAN_US: Final = 31 * 86_400_000_000  # a month: longer repairs are several requests
# The times a datetime (and so rfc3339, the dead-letter listing) can hold: years 1 to 9999.
MIN_US: Final = micros_of(datetime.min.replace(tzinfo=UTC))
MAX_US: Final = micros_of(datetime.max.replace(tzinfo=UTC))


class BadRequestError(ValueError):
    """A request body we cannot act on; the message goes back in the 400."""


def _micros(value: object, name: str) -> int:
    us: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        us = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                us = micros_of(moment)
    if us is not None and MIN_US <= us <= MAX_US:
        return us
    raise BadRequestError(
        f"{name!r} must be an RFC 3339 time with a zone, or microseconds, in years 1 to 9999"
    )


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
    start_us, end_us = _micros(body.get("start"), "start"), _micros(body.get("end"), "end")
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


def add_ops_routes(app: web.Application, database_url: str, keys: ApiKeys) -> None:
    connection = ReusedConnection(database_url, autocommit=True, connect_timeout=3)

    def guarded(handler: Handler) -> Handler:
        """Refuse a request without a known ops key; answer 503 while the database cannot."""

        async def answer(request: web.Request) -> web.Response:
            try:
                async with connection.lock:  # each request's transactions, one at a time
                    return await handler(request)
            except (psycopg.Error, TransientError) as exc:
                log.warning(
                    "%s %s: the database cannot answer: %s", request.method, request.path, exc
                )
                return json_response({"error": "the database cannot answer; try again"}, 503)

        return keyed(keys, "ops API key", answer)

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
        db = await connection.get()
        recorded = await queue.record_gap(db, gap, reopen=True)
        job = await queue.enqueue(db, **wanted, gap_id=recorded.id)
        log.info("backfill asked for: job %d, %s %s", job, wanted["instrument"], wanted["interval"])
        return json_response({"job": job, "gap": recorded.id}, 202)

    async def dead_letters(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return json_response({"error": "limit is an integer"}, 400)
        letters = await queue.list_dead_letters(await connection.get(), max(1, min(limit, 1000)))
        return json_response({"dead_letters": [dead_letter_json(d) for d in letters]})

    async def requeue(request: web.Request) -> web.Response:
        try:
            dlq_id = int(request.match_info["id"])
        except ValueError:
            return json_response({"error": "the id is an integer"}, 400)
        try:
            job = await queue.requeue_dead_letter(await connection.get(), dlq_id)
        except NotFoundError as exc:
            return json_response({"error": str(exc)}, 404)
        return json_response({"job": job, "dead_letter": dlq_id}, 202)

    async def close(_: web.Application) -> None:
        await connection.close()

    app.router.add_post("/ops/backfill", guarded(backfill))
    app.router.add_get("/ops/dlq/backfills", guarded(dead_letters))
    app.router.add_post("/ops/dlq/backfills/requeue/{id}", guarded(requeue))
    app.on_cleanup.append(close)
