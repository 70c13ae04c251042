"""The dead letters' ops endpoints: see what was rejected, by component and reason, and replay
one after a fix.

- `GET /ops/dlq?component=&reason=&limit=`: counts by component and reason, and the newest
  dead letters (`limit` 1 to 1,000, default 100) with their detail, source, position and
  whether they were replayed; the payload's size, not the payload.
- `POST /ops/dlq/{id}/replay`: publish the dead letter's payload again to the topic it came
  from (its partition and key), acknowledged by Kafka before the 202. Only to topics whose
  readers merge by key (bar batches, fundamentals, listings), where a message seen twice is
  one row: 409 for md.trades.v1 (its trades would be folded twice where they were folded),
  for a connector's input (a file, a provider: only the connector can read it again), and for
  a dead letter already replayed (a replay rejected again is a dead letter of its own).

Both take an ops key. The rows are what `store_dead_letters` kept of md.dlq.v1.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Final

from aiohttp import web
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from gateways.keyed import KeyGuard
from gateways.params import BadRequestError, parse_limit
from gateways.read_pool import database_answers
from shared.errors import DeliveryError
from shared.publisher import Publisher
from shared.settings import KafkaSettings
from shared.status import json_response
from shared.times import micros_of, rfc3339
from shared.topics import BAR_BATCHES, FUNDAMENTALS, LISTINGS, TRADES, all_topics

log = logging.getLogger(__name__)

# The topics whose every reader merges by key, so that a replayed message is at most a row
# written again; the rest of our topics, and why not.
REPLAYABLE: Final = frozenset({BAR_BATCHES, FUNDAMENTALS, LISTINGS})
NOT_REPLAYABLE: Final = {
    TRADES: "its trades would be folded into bars twice where they were folded once",
    **{
        spec.name: "its readers do not merge by key"
        for spec in all_topics(1)
        if spec.name not in REPLAYABLE | {TRADES}
    },
}
LISTED: Final = (
    "id", "component", "reason", "detail", "source", "source_partition", "source_offset",
    "line_number", "ts_event", "ts_recv", "replayed_at", "replayed_to",
)  # fmt: skip
COUNTS_SQL: Final = """
select component, reason, count(*), max(ts_recv) from dead_letters
group by component, reason order by count(*) desc, component, reason
"""
ONE_SQL: Final = (
    "select source, source_partition, key, payload, replayed_at from dead_letters where id = %s"
)
REPLAYED_SQL: Final = "update dead_letters set replayed_at = now(), replayed_to = %s where id = %s"
REPLAY_TIMEOUT_S: Final = 10.0
# librdkafka's own deadline for a replayed message, under REPLAY_TIMEOUT_S: one the API
# answered 503 for is not delivered later behind the operator's back.
PRODUCER_TIMEOUT_MS: Final = 8_000


def _time(value: Any) -> str | None:
    return None if value is None else rfc3339(micros_of(value))


def replay_refusal(source: str, replayed_at: Any) -> str | None:
    """Why a dead letter from `source` cannot be replayed, or None if it can."""
    if replayed_at is not None:
        return f"already replayed at {_time(replayed_at)}"
    if source in NOT_REPLAYABLE:
        return f"not replayed to {source}: {NOT_REPLAYABLE[source]}"
    if source not in REPLAYABLE:
        return f"it came from {source!r}, not one of our topics: run its input again"
    return None


def letter_json(row: tuple[Any, ...]) -> dict[str, object]:
    letter = dict(zip((*LISTED, "payload_bytes"), row, strict=True))
    letter["replayable"] = replay_refusal(letter["source"], letter["replayed_at"]) is None
    for name in ("ts_event", "ts_recv", "replayed_at"):
        letter[name] = _time(letter[name])
    return letter


def listing_query(request: web.Request) -> tuple[sql.Composed, dict[str, object]]:
    params: dict[str, object] = {"limit": parse_limit(request.query.get("limit"), 100, 1_000)}
    clauses: list[sql.Composable] = [sql.SQL("true")]
    for name in ("component", "reason"):
        if (value := request.query.get(name)) is not None:
            clauses.append(sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)))
            params[name] = value
    query = sql.SQL(
        "select {}, octet_length(payload) from dead_letters where {} order by id desc"
        " limit %(limit)s"
    ).format(sql.SQL(", ").join(map(sql.Identifier, LISTED)), sql.SQL(" and ").join(clauses))
    return query, params


def replay_publisher(kafka: KafkaSettings) -> Publisher:
    """The replays' producer: the workers' partitioner (a keyed message lands where theirs
    do), and a delivery deadline within the request's."""
    config = kafka.producer_config("marketstream-api-replay")
    return Publisher(
        config | {"partitioner": "murmur2_random", "message.timeout.ms": PRODUCER_TIMEOUT_MS}
    )


def add_dlq_routes(
    app: web.Application, pool: AsyncConnectionPool, operators: KeyGuard, producer: Publisher
) -> None:
    async def listing(request: web.Request) -> web.Response:
        try:
            query, params = listing_query(request)
        except BadRequestError as exc:
            return json_response({"error": str(exc)}, 400)
        async with pool.connection() as db:
            counts = await (await db.execute(COUNTS_SQL)).fetchall()
            rows = await (await db.execute(query, params)).fetchall()
        return json_response(
            {
                "counts": [
                    {"component": c, "reason": r, "count": n, "latest": _time(t)}
                    for c, r, n, t in counts
                ],
                "dead_letters": [letter_json(r) for r in rows],
            }
        )

    async def replay(request: web.Request) -> web.Response:
        try:
            letter_id = int(request.match_info["id"])
        except ValueError:
            return json_response({"error": "the id is an integer"}, 400)
        async with pool.connection() as db:  # not held while Kafka is waited for
            row = await (await db.execute(ONE_SQL, (letter_id,))).fetchone()
        if row is None:
            return json_response({"error": f"no dead letter {letter_id}"}, 404)
        source, partition, key, payload, replayed_at = row
        if refusal := replay_refusal(source, replayed_at):
            return json_response({"error": refusal}, 409)
        since = producer.mark()
        producer.produce(source, bytes(payload), key=key, partition=partition)
        try:
            await producer.settled(producer.mark(), REPLAY_TIMEOUT_S, since=since)
        except DeliveryError as exc:  # librdkafka gave up on it too (message.timeout.ms)
            log.warning("dead letter %d not replayed to %s: %s", letter_id, source, exc)
            return json_response({"error": "Kafka did not acknowledge it; try again"}, 503)
        async with pool.connection() as db:
            await db.execute(REPLAYED_SQL, (source, letter_id))
        log.info("dead letter %d replayed to %s[%s]", letter_id, source, partition)
        return json_response({"dead_letter": letter_id, "replayed_to": source}, 202)

    async def close(_: web.Application) -> None:
        with contextlib.suppress(DeliveryError):  # each replay waited for its own acknowledgement
            producer.flush(5.0)

    app.router.add_get("/ops/dlq", operators(database_answers(listing)))
    app.router.add_post("/ops/dlq/{id}/replay", operators(database_answers(replay)))
    app.on_cleanup.append(close)
