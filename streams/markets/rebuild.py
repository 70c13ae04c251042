"""`python -m streams markets rebuild`: re-match every stored listing with the batch join.

Reads the listings from `pm_listings` (the match_markets agent's copy of md.listings.v1),
re-scores every pair in one transaction, keeps the decisions people made, and publishes the
pairs that changed on md.matches.v1.
"""

from __future__ import annotations

import time

import psycopg

from shared.codec import Codec
from shared.publisher import Publisher
from streams.markets import store
from streams.markets.matcher import MarketMatcher


async def rebuild(database_url: str, publisher: Publisher, codec: Codec) -> tuple[int, int]:
    """Re-match everything; return (pairs changed, Match records published)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        async with db.transaction():
            changed = await MarketMatcher(codec).rebuild(db)
        published = await store.publish_pending(db, publisher, codec, time.time_ns() // 1000)
    return changed, published
