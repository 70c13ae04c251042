"""What the matcher writes when a listing arrives: pure, no Kafka or database.

Pairs are always oriented Kalshi first (venue A) and Polymarket second (venue B), so that an
incremental re-match of a Kalshi listing gives the rows the batch `join(kalshi, polymarket)`
gives for it. Re-matching a Kalshi listing replaces its automatic pairs: a pair that stays
`match` or `review` is updated, one that no longer is becomes `no_match` (so that consumers of
md.matches.v1 learn it ended), and a `no_match` pair that was never stored is not stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared.models import Listing, MatchDecision
from streams.matching import join
from streams.matching.evidence import explain

VENUE_A: Final = "kalshi"
VENUE_B: Final = "polymarket"
VENUES: Final = (VENUE_A, VENUE_B)


def matcher_listing(listing: Listing) -> join.Listing:
    """The listing as the matcher sees it: keyed `venue:market_id`, its close time as a UTC date."""
    close = (
        None
        if listing.close_time_us is None
        else dt.datetime.fromtimestamp(listing.close_time_us / 1e6, dt.UTC).date()
    )
    return join.Listing(listing.key, listing.title, close, listing.category, listing.rules)


@dataclass(frozen=True, slots=True)
class Scored:
    """One pair as the matcher scores it now, with its evidence as stored (JSON-ready)."""

    a_key: str
    b_key: str
    score: float
    rank: int
    decision: MatchDecision
    evidence: dict[str, list[str]]
    warnings: list[str]


def scored(pairs: Sequence[join.Pair], a: join.VenueIndex, b: join.VenueIndex) -> list[Scored]:
    """The matcher's pairs (A's listing first) with their evidence in words."""
    out = []
    for pair in pairs:
        found = explain(pair.flags, a.params[a.row_of[pair.a_id]], b.params[b.row_of[pair.b_id]])
        out.append(
            Scored(
                pair.a_id,
                pair.b_id,
                round(pair.score, 6),
                pair.rank,
                MatchDecision(pair.decision),
                {
                    "agreed": list(found.agreed),
                    "differed": list(found.differed),
                    "one_sided": list(found.one_sided),
                },
                list(found.warnings),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Writes:
    """A re-match's effect on the table: pairs to upsert, and B keys whose pair ended."""

    upserts: list[Scored]
    ended: list[str]


def rematch_writes(now: Sequence[Scored], stored: Collection[str]) -> Writes:
    """What re-matching one A listing writes: `now` is its pairs as scored now, `stored` the B
    keys of its stored pairs that the matcher still calls match or review."""
    kept = [p for p in now if p.decision is not MatchDecision.NO_MATCH or p.b_key in stored]
    scored_now = {p.b_key for p in now}
    return Writes(kept, sorted(b for b in stored if b not in scored_now))


def is_pair_venue(venue: str) -> bool:
    return venue in VENUES


def split_key(key: str) -> tuple[str, str]:
    """A listing key `venue:market_id` as (venue, market_id)."""
    venue, _, market_id = key.partition(":")
    return venue, market_id


def evidence_lists(evidence: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """(agreed, differed, one_sided) of a stored evidence object."""
    return tuple(tuple(evidence.get(name, ())) for name in ("agreed", "differed", "one_sided"))
