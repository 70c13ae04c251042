"""The `tally_trades` agent: decode every trade batch, fold it into live per-instrument stats."""

from __future__ import annotations

import logging

import faust
from aiohttp import web

from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError
from shared.metrics import TRADES_PROCESSED
from shared.status import json_response
from streams.app import Worker
from streams.stats.core import TradeTally

log = logging.getLogger(__name__)

COMPONENT = "worker.tally_trades"


def install(worker: Worker) -> None:
    """Declare the agent and add `/stats` to the worker's status endpoints."""
    tally = TradeTally()
    dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)

    @worker.app.agent(worker.trades, name="tally_trades")
    async def tally_trades(stream: faust.StreamT[bytes]) -> None:
        """Fold trade batches into per-instrument tallies; dead-letter what does not decode."""
        async for event in stream.events():
            try:
                batch = worker.trade_batches.of(event.message)
            except DecodeError as exc:
                dead_letters.reject_event(event, exc.reason, str(exc))
                continue
            tally.fold(batch)
            TRADES_PROCESSED.labels("tally_trades").inc(len(batch))

    async def stats(_: web.Request) -> web.Response:
        return json_response(tally.snapshot())

    worker.status.router.add_get("/stats", stats)
