"""The `match_markets` agent: md.listings.v1 into cross-venue pairs in `market_matches`, and
those pairs onto the compacted md.matches.v1.

The indexes live in memory and are rebuilt on start from `pm_listings`, the agent's durable
copy of the listings topic (its consumer group has committed past them). Each listing is stored
and matched in one transaction, and acknowledged after it commits: a crash replays it, and a
replay changes no row. Changed rows are published by a timer from the table (an outbox), which
also publishes the decisions people make through the HTTP API. One worker runs this agent: the
indexes must see every partition's listings.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import faust
import psycopg

from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError, MarketstreamError, TransientError
from shared.models import Listing
from shared.postgres import ReusedConnection
from streams.app import Worker, manual_acks
from streams.markets import store
from streams.markets.matcher import MarketMatcher

log = logging.getLogger(__name__)

COMPONENT: Final = "worker.match_markets"
PUBLISH_INTERVAL_S: Final = 0.5


async def retrying(what: str, step: Callable[[], Awaitable[object]]) -> None:
    """Run a database step until it succeeds: input is acknowledged only after it."""
    delay_s = 0.25
    while True:
        try:
            await step()
            return
        except (psycopg.OperationalError, TransientError) as exc:
            log.warning(
                "%s: the database cannot answer (%s); retrying in %.1f s", what, exc, delay_s
            )
            await asyncio.sleep(delay_s)
            delay_s = min(30.0, 2 * delay_s)


def install(worker: Worker) -> None:
    """Declare `match_markets` and the timer that publishes changed pairs."""
    matcher = MarketMatcher(worker.codec)
    connection = ReusedConnection(worker.database_url, autocommit=True)
    outbox = ReusedConnection(worker.database_url, autocommit=True)
    dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)

    async def load() -> None:
        await matcher.load(await connection.get())

    async def apply(listing: Listing, body: bytes) -> None:
        db = await connection.get()
        async with db.transaction():
            await matcher.apply(db, listing, body)

    @worker.app.agent(worker.listings, name="match_markets")
    async def match_markets(stream: faust.StreamT[bytes]) -> None:
        await retrying("match_markets: loading the listings", load)
        async for event in manual_acks(stream).events():
            body = event.value
            try:
                listing = worker.codec.decode_listing(body)
            except DecodeError as exc:
                dead_letters.reject_event(event, exc.reason, str(exc))
                await asyncio.to_thread(worker.publisher.flush)
                event.ack()
                continue
            await retrying(f"match_markets {listing.key}", functools.partial(apply, listing, body))
            event.ack()

    @worker.app.timer(interval=PUBLISH_INTERVAL_S)
    async def publish_matches() -> None:
        try:
            await store.publish_pending(
                await outbox.get(), worker.publisher, worker.codec, time.time_ns() // 1000
            )
        except (psycopg.Error, MarketstreamError) as exc:  # published at the next tick
            log.warning("publish_matches: %s", exc)
