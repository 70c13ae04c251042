"""The `match_markets` agent: md.listings.v1 into cross-venue pairs in `market_matches`, and
those pairs onto the compacted md.matches.v1.

The indexes live in memory and are rebuilt on start from `pm_listings`, the agent's durable
copy of the listings topic (its consumer group has committed past them). Each listing is stored
and matched in one transaction, and acknowledged after it commits: a crash replays it, and a
replay changes no row. Changed rows are published by a timer from the table (an outbox), which
also publishes the decisions people make through the HTTP API. One worker runs this agent: the
indexes must see every partition's listings.

Every `MS_MARKETS_FULL_RUN_S` (an hour) a full run reloads every stored listing and re-matches
all of them with the batch join, as `python -m streams markets rebuild` does, and reports its
duration (`matching_run_seconds`): the incremental path and the batch join agree, so a full run
changes nothing unless a listing was missed, and says so in its count.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Final

import faust
import psycopg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError, MarketstreamError
from shared.metrics import MATCHING_RUN_SECONDS
from shared.models import Listing
from shared.postgres import ReusedConnection
from shared.settings import load_settings
from streams.app import Worker, freeze_long_lived_heap, manual_acks, retry_until_done
from streams.markets import store
from streams.markets.matcher import MarketMatcher

log = logging.getLogger(__name__)

COMPONENT: Final = "worker.match_markets"
PUBLISH_INTERVAL_S: Final = 0.5


class MarketsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MS_MARKETS_", extra="forbid")

    full_run_s: float = Field(3600.0, gt=0, description="seconds between full re-matches")


def install(worker: Worker) -> None:
    """Declare `match_markets` and the timer that publishes changed pairs."""
    matcher = MarketMatcher(worker.codec)
    connection = ReusedConnection(worker.database_url, autocommit=True)
    outbox = ReusedConnection(worker.database_url, autocommit=True)
    dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)

    async def load() -> None:
        await matcher.load(await connection.get())
        freeze_long_lived_heap()  # the index: new listings matched without a full collection

    async def apply(listing: Listing, body: bytes) -> None:
        async with connection.lock:  # the full run uses the connection too
            db = await connection.get()
            async with db.transaction():
                await matcher.apply(db, listing, body)

    async def full_run() -> None:
        started = time.monotonic()
        async with connection.lock:
            db = await connection.get()
            async with db.transaction():
                changed = await matcher.rebuild(db)
        freeze_long_lived_heap()  # the rebuilt index
        elapsed_s = time.monotonic() - started
        MATCHING_RUN_SECONDS.observe(elapsed_s)
        log.info("full matching run: %d pairs changed in %.2f s", changed, elapsed_s)

    @worker.app.agent(worker.listings, name="match_markets")
    async def match_markets(stream: faust.StreamT[bytes]) -> None:
        await retry_until_done("match_markets: loading the listings", load)
        async for event in manual_acks(stream).events():
            body = event.value
            try:
                listing = worker.codec.decode_listing(body)
            except DecodeError as exc:
                dead_letters.reject_event(event, exc.reason, str(exc))
                await asyncio.to_thread(worker.publisher.flush)
                event.ack()
                continue
            await retry_until_done(
                f"match_markets {listing.key}", functools.partial(apply, listing, body)
            )
            event.ack()

    @worker.app.timer(interval=load_settings(MarketsSettings).full_run_s)
    async def full_matching_run() -> None:
        try:
            await full_run()
        except (psycopg.Error, MarketstreamError) as exc:  # the next run, then
            log.warning("full matching run: %s", exc)

    @worker.app.timer(interval=PUBLISH_INTERVAL_S)
    async def publish_matches() -> None:
        try:
            await store.publish_pending(
                await outbox.get(), worker.publisher, worker.codec, time.time_ns() // 1000
            )
        except (psycopg.Error, MarketstreamError) as exc:  # published at the next tick
            log.warning("publish_matches: %s", exc)
