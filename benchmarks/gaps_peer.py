"""The naive peer of the gaps scenario: a cron-style job that re-fetches the whole day.

After the outage it asks the same fake history, within the same request budget, for the
trades of every instrument over the last 24 whole hours (those before the end of the hour the
outage ended in: a day, whatever the hour of the run) and publishes them to md.trades.v1 as a
source of its own per instrument, `cron:<symbol>`, with the heartbeat that closes its windows,
so the bar worker replaces every bar of the day with its own. It knows nothing of gaps: it
repairs whatever broke by redoing everything. It uses the client the backfill uses
(connectors.alpaca_history.AlpacaHistory, one page of `page_limit` trades per request), and a
few instruments at once, as a cron script with a thread pool would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Final

from connectors.alpaca import AlpacaConfig
from connectors.alpaca_history import PROVIDER, AlpacaHistory
from connectors.budget import Limit, Priority, RequestBudget
from connectors.event_clock import END_OF_STREAM_ADVANCE_US
from connectors.fakes.alpaca import KEY_ID, SECRET_KEY
from shared.codec import Codec
from shared.models import TradeBatch
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.topics import TRADES

log = logging.getLogger(__name__)

CONCURRENCY: Final = 4  # instruments fetched at once
SOURCE_PREFIX: Final = "cron:"


@dataclass(slots=True)
class CronOutcome:
    """What the job did: requests it sent (429s included), trades it published, its time."""

    requests: int = 0
    rate_limited: int = 0
    trades: int = 0
    fetched_s: float | None = None  # from its start to the last page received
    acknowledged_s: float | None = None  # to Kafka acknowledging every message


async def refetch_day(
    rest_url: str,
    symbols: list[str],
    start_us: int,
    end_us: int,
    *,
    publisher: Publisher,
    codec: Codec,
    partitions: int,
    requests_per_minute: int,
    page_limit: int,
) -> CronOutcome:
    """Re-fetch [start_us, end_us) of every symbol and republish it; raise what the history
    raises (TransientError, FatalError) and DeliveryError if Kafka refuses a message."""
    config = AlpacaConfig.model_validate(
        {
            "feed": "crypto",
            "rest_url": rest_url,
            "symbols": ",".join(symbols),
            "key_id": KEY_ID,
            "secret_key": SECRET_KEY,
        }
    )
    budget = RequestBudget(PROVIDER, [Limit(requests_per_minute, 60.0)])
    history = AlpacaHistory(
        config, budget=budget, priority=Priority.BACKFILL, page_limit=page_limit
    )
    outcome = CronOutcome()
    started = time.monotonic()
    todo: asyncio.Queue[str] = asyncio.Queue()
    for symbol in symbols:
        todo.put_nowait(symbol)

    async def one(symbol: str) -> None:
        source = f"{SOURCE_PREFIX}{symbol}"
        partition = partition_for(symbol, partitions)
        watermark_us = 0
        async for page in history.trades(symbol, start_us, end_us):
            watermark_us = max(watermark_us, int(page.ts_event_us.max()))
            batch = dataclasses.replace(page, source=source, watermark_us=watermark_us)
            publisher.produce(
                TRADES, codec.encode_trade_batch(batch), key=symbol.encode(), partition=partition
            )
            outcome.trades += len(batch)
        closing = TradeBatch.heartbeat(source, end_us + END_OF_STREAM_ADVANCE_US)
        publisher.produce(TRADES, codec.encode_trade_batch(closing), partition=partition)

    async def drain() -> None:
        while not todo.empty():
            await one(todo.get_nowait())

    try:
        await asyncio.gather(*(drain() for _ in range(CONCURRENCY)))
        outcome.fetched_s = time.monotonic() - started
        await asyncio.to_thread(publisher.flush, 120.0)
        outcome.acknowledged_s = time.monotonic() - started
    finally:
        outcome.requests, outcome.rate_limited = history.requests, history.rate_limited
        await history.close()
    log.info(
        "cron: %d trades of %d symbols in %d requests, %.1f s",
        outcome.trades,
        len(symbols),
        outcome.requests,
        outcome.acknowledged_s or -1.0,
    )
    return outcome
