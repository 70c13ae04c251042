"""The matcher's tables: `pm_listings` (its copy of md.listings.v1) and `market_matches`.

A person's decision sticks: every automatic write keeps `decision` where `decided_by` is
'person' and only refreshes the score, the evidence and `auto_decision`. A write that changes
nothing changes no row, so replaying md.listings.v1 publishes nothing again. Changed rows are
marked unpublished; `publish_pending` puts them on md.matches.v1 (the outbox), which is also
how a decision made through the HTTP API reaches the topic.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from shared.codec import Codec
from shared.metrics import MATCHES_DECIDED
from shared.models import Listing, Match, MatchDecider, MatchDecision
from shared.publisher import Publisher
from shared.times import micros_of, time_of
from shared.topics import MATCHES
from streams.markets.core import Scored, evidence_lists, split_key

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]
PUBLISH_BATCH: Final = 1000
LISTING_SQL: Final = """
insert into pm_listings (key, venue, market_id, title, outcomes, status, body, ts_event)
values (%s, %s, %s, %s, %s, %s, %s, %s)
on conflict (key) do update set
    venue = excluded.venue, market_id = excluded.market_id, title = excluded.title,
    outcomes = excluded.outcomes, status = excluded.status, body = excluded.body,
    ts_event = excluded.ts_event, updated_at = now()
where excluded.ts_event >= pm_listings.ts_event
returning key
"""
LISTINGS_SQL: Final = "select body from pm_listings order by key"
UPSERT_SQL: Final = """
insert into market_matches (a_key, b_key, score, rank, decision, auto_decision, evidence, warnings)
values (%s, %s, %s, %s, %s, %s, %s, %s)
on conflict (a_key, b_key) do update set
    score = excluded.score, rank = excluded.rank, auto_decision = excluded.auto_decision,
    decision = case when market_matches.decided_by = 'person' then market_matches.decision
                    else excluded.decision end,
    evidence = excluded.evidence, warnings = excluded.warnings, published = false,
    updated_at = now()
where (market_matches.score, market_matches.rank, market_matches.auto_decision,
       market_matches.evidence, market_matches.warnings)
      is distinct from
      (excluded.score, excluded.rank, excluded.auto_decision, excluded.evidence, excluded.warnings)
returning decision
"""
END_SQL: Final = """
update market_matches set
    auto_decision = 'no_match',
    decision = case when decided_by = 'person' then decision else 'no_match' end,
    published = false, updated_at = now()
where a_key = %s and b_key = %s and auto_decision <> 'no_match'
returning decision
"""
END_LISTING_SQL: Final = """
update market_matches set
    auto_decision = 'no_match',
    decision = case when decided_by = 'person' then decision else 'no_match' end,
    published = false, updated_at = now()
where (a_key = %s or b_key = %s) and auto_decision <> 'no_match'
returning decision
"""
PAIRED_B_SQL: Final = (
    "select b_key from market_matches where a_key = %s and auto_decision <> 'no_match'"
)
PAIRED_A_SQL: Final = (
    "select a_key from market_matches where b_key = %s and auto_decision <> 'no_match'"
)
ALL_PAIRED_SQL: Final = "select a_key, b_key from market_matches where auto_decision <> 'no_match'"
PENDING_SQL: Final = """
select id, a_key, b_key, score, rank, decision, decided_by, auto_decision, inverted, evidence,
       warnings, updated_at
from market_matches where not published order by id limit %s
"""
PUBLISHED_SQL: Final = (
    "update market_matches set published = true where id = %s and updated_at = %s"
)


async def store_listing(connection: Connection, listing: Listing, body: bytes) -> bool:
    """Keep the listing unless a later one is stored; return whether it was kept."""
    cursor = await connection.execute(
        LISTING_SQL,
        (
            listing.key,
            listing.venue,
            listing.market_id,
            listing.title,
            Jsonb(list(listing.outcomes)),
            str(listing.status),
            body,
            time_of(listing.ts_event_us),
        ),
    )
    return await cursor.fetchone() is not None


async def stored_listings(connection: Connection) -> list[bytes]:
    """Every stored listing, as the framed Avro it arrived as."""
    cursor = await connection.execute(LISTINGS_SQL)
    return [bytes(body) for (body,) in await cursor.fetchall()]


async def paired_with_a(connection: Connection, a_key: str) -> set[str]:
    """The B keys the matcher pairs with A listing `a_key` (match or review)."""
    cursor = await connection.execute(PAIRED_B_SQL, (a_key,))
    return {b for (b,) in await cursor.fetchall()}


async def paired_with_b(connection: Connection, b_key: str) -> set[str]:
    """The A keys the matcher pairs with B listing `b_key` (match or review)."""
    cursor = await connection.execute(PAIRED_A_SQL, (b_key,))
    return {a for (a,) in await cursor.fetchall()}


async def all_paired(connection: Connection) -> dict[str, set[str]]:
    """A key -> the B keys the matcher pairs with it (match or review)."""
    found: dict[str, set[str]] = {}
    for a_key, b_key in await (await connection.execute(ALL_PAIRED_SQL)).fetchall():
        found.setdefault(a_key, set()).add(b_key)
    return found


async def _count(cursor: psycopg.AsyncCursor[Any]) -> int:
    rows = await cursor.fetchall()
    for (decision,) in rows:
        MATCHES_DECIDED.labels(decision).inc()
    return len(rows)


async def upsert_pairs(connection: Connection, pairs: Sequence[Scored]) -> int:
    """Write the pairs as scored now; return how many rows changed."""
    changed = 0
    for p in pairs:
        cursor = await connection.execute(
            UPSERT_SQL,
            (
                p.a_key, p.b_key, p.score, p.rank, str(p.decision), str(p.decision),
                Jsonb(p.evidence), Jsonb(p.warnings),
            ),
        )  # fmt: skip
        changed += await _count(cursor)
    return changed


async def end_pairs(connection: Connection, a_key: str, b_keys: Sequence[str]) -> int:
    """Mark the matcher's pairs of `a_key` with `b_keys` ended (no_match); return how many."""
    changed = 0
    for b_key in b_keys:
        changed += await _count(await connection.execute(END_SQL, (a_key, b_key)))
    return changed


async def end_listing(connection: Connection, key: str) -> int:
    """Mark every pair of a listing that closed or settled ended; return how many."""
    return await _count(await connection.execute(END_LISTING_SQL, (key, key)))


def match_of(row: tuple[Any, ...], ts_recv_us: int) -> Match:
    """A `market_matches` row (PENDING_SQL's columns) as a Match record."""
    _, a_key, b_key, score, rank, decision, decided_by, auto, inverted, evidence, warnings, at = row
    (a_venue, a_market), (b_venue, b_market) = split_key(a_key), split_key(b_key)
    agreed, differed, one_sided = evidence_lists(evidence)
    return Match(
        a_venue=a_venue,
        a_market_id=a_market,
        b_venue=b_venue,
        b_market_id=b_market,
        score=score,
        rank=rank,
        decision=MatchDecision(decision),
        decided_by=MatchDecider(decided_by),
        auto_decision=MatchDecision(auto),
        inverted=inverted,
        agreed=agreed,
        differed=differed,
        one_sided=one_sided,
        warnings=tuple(warnings),
        ts_event_us=micros_of(at),
        ts_recv_us=ts_recv_us,
    )


async def publish_pending(
    connection: Connection, publisher: Publisher, codec: Codec, now_us: int
) -> int:
    """Put every unpublished pair on md.matches.v1, then mark it published (unless it changed
    meanwhile); return how many. A crash in between publishes them again: the topic is
    compacted, so a consumer sees the same record twice at worst."""
    total = 0
    while True:
        rows = await (await connection.execute(PENDING_SQL, (PUBLISH_BATCH,))).fetchall()
        if not rows:
            return total
        since = publisher.mark()
        for row in rows:
            match = match_of(row, now_us)
            publisher.produce(MATCHES, codec.encode_match(match), key=match.key.encode())
        await asyncio.to_thread(functools.partial(publisher.flush, since=since))
        async with connection.cursor() as cursor:
            await cursor.executemany(PUBLISHED_SQL, [(row[0], row[-1]) for row in rows])
        total += len(rows)
        log.info("published %d matches on %s", len(rows), MATCHES)
