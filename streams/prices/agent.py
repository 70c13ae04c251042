"""The `track_prices` agents: each instrument's latest trade and quote into `latest_trades` and
`latest_quotes`, which `GET /stocks/{symbol}/price` reads.

Per batch only each instrument's latest row counts (streams.prices.core), and per flush only
the newest row of each symbol is written, so the database sees a few hundred rows a flush
however many trades arrive. A row replaces the stored one only if it is as recent
(`ts_event`), so a replay of older data never rolls a price back. Input is acknowledged once
written; an outage is retried without acknowledging anything (streams.upserts).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import faust

from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError
from shared.metrics import TRADES_PROCESSED
from shared.models import QuoteBatch, TradeBatch
from shared.postgres import ReusedConnection
from shared.settings import SinkSettings, load_settings
from shared.times import time_of
from streams.app import Worker, manual_acks
from streams.decoded import refuse_synthetic
from streams.prices.core import latest_rows
from streams.upserts import Upserts

COMPONENT: Final = "worker.track_prices"
MAX_PENDING_EVENTS: Final = 10_000
TRADES_SQL: Final = """
insert into latest_trades (symbol, price, size, ts_event, ts_recv, source, provider)
values (%s, %s, %s, %s, %s, %s, %s)
on conflict (symbol) do update set
    price = excluded.price, size = excluded.size, ts_event = excluded.ts_event,
    ts_recv = excluded.ts_recv, source = excluded.source, provider = excluded.provider
where excluded.ts_event >= latest_trades.ts_event
"""
QUOTES_SQL: Final = """
insert into latest_quotes
    (symbol, bid_price, bid_size, ask_price, ask_size, ts_event, ts_recv, source, provider)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
on conflict (symbol) do update set
    bid_price = excluded.bid_price, bid_size = excluded.bid_size,
    ask_price = excluded.ask_price, ask_size = excluded.ask_size, ts_event = excluded.ts_event,
    ts_recv = excluded.ts_recv, source = excluded.source, provider = excluded.provider
where excluded.ts_event >= latest_quotes.ts_event
"""

Row = tuple[object, ...]  # symbol first, as the SQL takes it


def trade_rows(batch: TradeBatch) -> list[tuple[int, Row]]:
    """(event time, row) of each instrument's latest trade in the batch."""
    provider = batch.provider or batch.source
    return [
        (
            int(batch.ts_event_us[r]),
            (
                batch.instruments[batch.instrument_index[r]],
                float(batch.price[r]),
                float(batch.size[r]),
                time_of(int(batch.ts_event_us[r])),
                time_of(int(batch.ts_recv_us[r])),
                batch.source,
                provider,
            ),
        )
        for r in latest_rows(batch.instrument_index, batch.ts_event_us).tolist()
    ]


def quote_rows(batch: QuoteBatch) -> list[tuple[int, Row]]:
    """(event time, row) of each instrument's latest quote in the batch."""
    provider = batch.provider or batch.source
    return [
        (
            int(batch.ts_event_us[r]),
            (
                batch.instruments[batch.instrument_index[r]],
                float(batch.bid_price[r]),
                float(batch.bid_size[r]),
                float(batch.ask_price[r]),
                float(batch.ask_size[r]),
                time_of(int(batch.ts_event_us[r])),
                time_of(int(batch.ts_recv_us[r])),
                batch.source,
                provider,
            ),
        )
        for r in latest_rows(batch.instrument_index, batch.ts_event_us).tolist()
    ]


class LatestRows:
    """The newest row of each symbol since the last flush, and the events they came from."""

    def __init__(self, worker: Worker, upserts: Upserts) -> None:
        self.worker = worker
        self.upserts = upserts
        self.dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)
        self.pending: dict[str, tuple[int, Row, Any]] = {}  # symbol: (ts_event_us, row, event)
        self.events: list[Any] = []
        self.lock = asyncio.Lock()

    async def add(self, event: Any, rows: list[tuple[int, Row]]) -> None:
        for ts_us, row in rows:
            symbol = str(row[0])
            held = self.pending.get(symbol)
            if held is None or ts_us >= held[0]:
                self.pending[symbol] = (ts_us, row, event)
        self.events.append(event)
        if len(self.events) >= MAX_PENDING_EVENTS:
            await self.flush()

    async def reject(self, event: Any, reason: str, detail: str) -> None:
        self.dead_letters.reject_event(event, reason, detail)
        await asyncio.to_thread(self.worker.publisher.flush)
        event.ack()

    async def flush(self) -> None:
        """Write the pending rows; a row the database refuses dead-letters the event it came
        from; then acknowledge the input."""
        async with self.lock:
            pending, self.pending = list(self.pending.values()), {}
            events, self.events = self.events, []
            refused = await self.upserts.write([row for _, row, _ in pending])
            for k, reason in refused:
                self.dead_letters.reject_event(pending[k][2], "refused_by_database", reason)
            if refused:
                await asyncio.to_thread(self.worker.publisher.flush)
            for event in events:
                event.ack()


def install(worker: Worker) -> None:
    """Declare the trade and quote agents of `track_prices` and their flush timer."""
    # A connection each: one flushes from its agent while the timer flushes the other.
    trades = LatestRows(
        worker, Upserts(ReusedConnection(worker.database_url), TRADES_SQL, "latest trades")
    )
    quotes = LatestRows(
        worker, Upserts(ReusedConnection(worker.database_url), QUOTES_SQL, "latest quotes")
    )

    @worker.app.agent(worker.trades, name="track_prices")
    async def track_prices(stream: faust.StreamT[bytes]) -> None:
        async for event in manual_acks(stream).events():
            try:
                batch = worker.trade_batches.of(event.message)
            except DecodeError as exc:  # SyntheticDataError included: its own reason
                await trades.reject(event, exc.reason, str(exc))
                continue
            await trades.add(event, trade_rows(batch))
            TRADES_PROCESSED.labels("track_prices").inc(len(batch))

    @worker.app.agent(worker.quotes, name="track_quote_prices")
    async def track_quote_prices(stream: faust.StreamT[bytes]) -> None:
        async for event in manual_acks(stream).events():
            try:
                batch = worker.codec.decode_quote_batch(event.value)
                refuse_synthetic(worker.refused_sources, batch.source, batch.provider)
            except DecodeError as exc:
                await quotes.reject(event, exc.reason, str(exc))
                continue
            await quotes.add(event, quote_rows(batch))

    @worker.app.timer(interval=load_settings(SinkSettings).flush_interval_s)
    async def flush_prices() -> None:
        await trades.flush()
        await quotes.flush()
