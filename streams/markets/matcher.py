"""The live matcher: one VenueIndex per venue, kept from md.listings.v1 and `pm_listings`.

A Kalshi listing is re-matched against the Polymarket index directly. A Polymarket listing
is matched against the Kalshi index to find the Kalshi listings it may pair with, and those
(with the ones it was paired with) are re-matched, so that every pair is scored from the
Kalshi side, as the batch join scores it. A listing that closes or settles leaves its index
and its pairs end. `rebuild` re-matches everything from the stored listings with the batch
join; person decisions are kept by the table's writes (streams.markets.store).
"""

from __future__ import annotations

import logging
from typing import Final

from shared.codec import Codec
from shared.metrics import LISTINGS_READ
from shared.models import Listing
from streams.markets import store
from streams.markets.core import (
    VENUE_A,
    VENUE_B,
    Scored,
    matcher_listing,
    rematch_writes,
    scored,
)
from streams.matching.join import Thresholds, VenueIndex, block_keys, join, match_listing

log = logging.getLogger(__name__)

THRESHOLDS: Final = Thresholds()


class MarketMatcher:
    """Both venues' indexes and the writes a listing causes; callers hold the transaction."""

    def __init__(self, codec: Codec, thresholds: Thresholds = THRESHOLDS) -> None:
        self.codec = codec
        self.thresholds = thresholds
        self.indexes = {VENUE_A: VenueIndex(), VENUE_B: VenueIndex()}

    async def load(self, connection: store.Connection) -> int:
        """Fill the indexes with the stored live listings; return how many."""
        self.indexes = {VENUE_A: VenueIndex(), VENUE_B: VenueIndex()}
        live = [
            listing
            for body in await store.stored_listings(connection)
            if (listing := self.codec.decode_listing(body)).status.live
            and listing.venue in self.indexes
        ]
        for venue, index in self.indexes.items():
            index.upsert([matcher_listing(x) for x in live if x.venue == venue])
        log.info(
            "matcher indexes loaded: %d kalshi, %d polymarket listings",
            len(self.indexes[VENUE_A]),
            len(self.indexes[VENUE_B]),
        )
        return len(live)

    async def apply(self, connection: store.Connection, listing: Listing, body: bytes) -> int:
        """Store a listing, update its index and re-match what it touches; return the pairs
        that changed. Idempotent: a listing seen again (or an older one) changes nothing."""
        if not await store.store_listing(connection, listing, body):
            return 0  # a later version of it is stored already
        index = self.indexes.get(listing.venue)
        if index is None:
            return 0  # a venue without a counterpart to match against
        LISTINGS_READ.labels(listing.venue).inc()
        key = listing.key
        if listing.status.live:
            rows = index.upsert([matcher_listing(listing)])
        else:
            index.remove(key)
            rows = []
        if listing.venue == VENUE_A:
            if not rows:
                return await store.end_listing(connection, key)
            return await self._rematch(connection, key)
        changed = 0
        a_keys = await store.paired_with_b(connection, key)
        if rows:
            # every Kalshi listing whose own top-k may now hold this one: all those sharing
            # its blocking keys and date window (this listing's top-k in Kalshi is not enough:
            # a Kalshi listing may rank it first while it ranks that one past its k)
            a_index, row = self.indexes[VENUE_A], rows[0]
            found = a_index.candidates(
                index.records[row], block_keys(index.params[row]), self.thresholds.window_days
            )
            a_keys |= {a_index.ids[r] for r in found.tolist()}
        else:
            changed += await store.end_listing(connection, key)
        for a_key in sorted(a_keys):
            if a_key in self.indexes[VENUE_A].row_of:
                changed += await self._rematch(connection, a_key)
        return changed

    async def _rematch(self, connection: store.Connection, a_key: str) -> int:
        a, b = self.indexes[VENUE_A], self.indexes[VENUE_B]
        pairs = match_listing(a, a.row_of[a_key], b, self.thresholds)
        writes = rematch_writes(scored(pairs, a, b), await store.paired_with_a(connection, a_key))
        changed = await store.upsert_pairs(connection, writes.upserts)
        return changed + await store.end_pairs(connection, a_key, writes.ended)

    async def rebuild(self, connection: store.Connection) -> int:
        """Reload the listings and re-match all of them with the batch join; return the pairs
        that changed. Pairs of listings no longer live end."""
        await self.load(connection)
        a, b = self.indexes[VENUE_A], self.indexes[VENUE_B]
        result = join(a, b, self.thresholds)
        by_a: dict[str, list[Scored]] = {}
        for pair in scored(result.pairs(a, b), a, b):
            by_a.setdefault(pair.a_key, []).append(pair)
        stored = await store.all_paired(connection)
        changed = 0
        for a_key in sorted(set(by_a) | set(stored)):
            writes = rematch_writes(by_a.get(a_key, []), stored.get(a_key, set()))
            changed += await store.upsert_pairs(connection, writes.upserts)
            changed += await store.end_pairs(connection, a_key, writes.ended)
        log.info("rebuild: %d x %d listings, %d pairs changed", len(a), len(b), changed)
        return changed
