"""The matcher's pairs: for readers, those it matched; for operators, those it is unsure of,
to decide.

- `GET /matches?status=match&limit=100` (a read API key): the pairs matched, as below.
- `GET /ops/matches?status=review&limit=100`: pairs with that decision in force (`match`,
  `review` or `no_match`), best score first, with both listings' titles, the evidence, the
  warnings and who decided.
- `POST /ops/matches/{id}` with `{"decision": "match" | "no_match", "inverted"?: bool}`: a
  person's decision, which the matcher never overwrites (re-matches and `python -m streams
  markets rebuild` refresh only its score and evidence). `inverted: true` says YES on the
  Kalshi listing is NO on the Polymarket one, for arbitrage. The match_markets agent publishes
  the decision on md.matches.v1. 404 for an unknown id.

The /ops routes take an ops key (`MS_API_OPS_KEYS`), as the other /ops routes do.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from psycopg_pool import AsyncConnectionPool

from gateways.keyed import KeyGuard
from gateways.read_pool import database_answers
from shared.models import MatchDecision
from shared.status import json_response

log = logging.getLogger(__name__)

PERSON_DECISIONS: Final = (MatchDecision.MATCH, MatchDecision.NO_MATCH)
COLUMNS: Final = """
m.id, m.a_key, a.title, m.b_key, b.title, m.score, m.rank, m.decision, m.auto_decision,
m.decided_by, m.inverted, m.evidence, m.warnings, m.updated_at
"""
LIST_SQL: Final = f"""
select {COLUMNS}
from market_matches m
left join pm_listings a on a.key = m.a_key
left join pm_listings b on b.key = m.b_key
where m.decision = %s order by m.score desc, m.id limit %s
"""
DECIDE_SQL: Final = """
update market_matches set decision = %s, decided_by = 'person', inverted = %s,
    published = false, updated_at = now()
where id = %s
returning id
"""
ONE_SQL: Final = f"""
select {COLUMNS}
from market_matches m
left join pm_listings a on a.key = m.a_key
left join pm_listings b on b.key = m.b_key
where m.id = %s
"""
NAMES: Final = (
    "id", "a_key", "a_title", "b_key", "b_title", "score", "rank", "decision", "auto_decision",
    "decided_by", "inverted", "evidence", "warnings", "updated_at",
)  # fmt: skip


def _pair(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(NAMES, row, strict=True))


def parse_decision(body: object) -> tuple[MatchDecision, bool]:
    """The decision and inversion of a POST body; raise ValueError saying what is wrong."""
    if not isinstance(body, dict):
        raise ValueError('the body is a JSON object: {"decision": "match" | "no_match"}')
    try:
        decision: MatchDecision | None = MatchDecision(str(body.get("decision")))
    except ValueError:
        decision = None
    if decision not in PERSON_DECISIONS:
        raise ValueError(f"decision is 'match' or 'no_match', not {body.get('decision')!r}")
    inverted = body.get("inverted", False)
    if not isinstance(inverted, bool):
        raise ValueError("inverted is true or false")
    return decision, inverted


def add_match_routes(
    app: web.Application, pool: AsyncConnectionPool, readers: KeyGuard, operators: KeyGuard
) -> None:
    def listing(default_status: str) -> Handler:
        async def list_matches(request: web.Request) -> web.Response:
            status = request.query.get("status", default_status)
            try:
                decision = MatchDecision(status)
                limit = int(request.query.get("limit", "100"))
            except ValueError:
                return json_response(
                    {"error": "status is match, review or no_match; limit is an integer"}, 400
                )
            async with pool.connection() as db:
                cursor = await db.execute(LIST_SQL, (str(decision), max(1, min(limit, 1000))))
                rows = await cursor.fetchall()
            return json_response({"matches": [_pair(r) for r in rows]})

        return list_matches

    async def decide(request: web.Request) -> web.Response:
        try:
            pair_id = int(request.match_info["id"])
        except ValueError:
            return json_response({"error": "the id is an integer"}, 400)
        try:
            decision, inverted = parse_decision(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        async with pool.connection() as db:
            cursor = await db.execute(DECIDE_SQL, (str(decision), inverted, pair_id))
            if await cursor.fetchone() is None:
                return json_response({"error": f"no pair {pair_id}"}, 404)
            row = await (await db.execute(ONE_SQL, (pair_id,))).fetchone()
        assert row is not None
        log.info("pair %d decided by a person: %s (inverted: %s)", pair_id, decision, inverted)
        return json_response(_pair(row))

    app.router.add_get("/matches", readers(database_answers(listing("match"))))
    app.router.add_get("/ops/matches", operators(database_answers(listing("review"))))
    app.router.add_post("/ops/matches/{id}", operators(database_answers(decide)))
