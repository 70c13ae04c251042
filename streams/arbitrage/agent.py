"""The `flag_arbitrage` agent: md.pm_prices.v1 against the matched pairs, into `arbitrage` and
md.arbitrage.v1.

It keeps each outcome's latest ask in memory (prices arrive every few seconds; after a restart
the book fills again within a refresh) and reloads the pairs decided `match` of two open
listings from `market_matches` every MS_ARB_PAIRS_RELOAD_S. A price batch re-judges the pairs
of its markets; a reload re-judges all and closes what a pair that stopped matching had open.
An opening, a change of its prices or sizes, and a closing each write the table and publish a
record before the input is acknowledged; the open ones are read back on start.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Iterable
from typing import Any, Final

import faust
import orjson
import psycopg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.dead_letters import DeadLetterPublisher
from shared.errors import DecodeError, DeliveryError, TransientError
from shared.metrics import ARBITRAGE_OPEN
from shared.models import Arbitrage, ArbitrageDirection, ArbitrageLeg, PmPriceBatch
from shared.postgres import ReusedConnection
from shared.settings import load_settings
from shared.times import micros_of, time_of
from shared.topics import ARBITRAGE
from streams.app import RETRIED, Worker, manual_acks, retry_until_done
from streams.arbitrage.core import Ask, Change, OpenArbitrage, OutcomeKey, PairLegs, pair_legs
from streams.arbitrage.core import opportunity as judge_opportunity
from streams.arbitrage.fees import KALSHI_TAKER_RATE, POLYMARKET_TAKER_RATE, FeeModels

log = logging.getLogger(__name__)

COMPONENT: Final = "worker.flag_arbitrage"
PAIRS_SQL: Final = """
select m.a_key || '|' || m.b_key, m.a_key, a.outcomes, m.b_key, b.outcomes, m.inverted
from market_matches m
join pm_listings a on a.key = m.a_key
join pm_listings b on b.key = m.b_key
where m.decision = 'match' and a.status = 'open' and b.status = 'open'
"""
_LEG_COLUMNS: Final = ("venue", "market", "outcome", "price", "size", "fee")
COLUMNS: Final = (
    ["pair", "direction"]
    + [f"yes_{c}" for c in _LEG_COLUMNS]
    + [f"no_{c}" for c in _LEG_COLUMNS]
    + ["contracts", "cost", "edge", "opened_at", "observed_at"]
)
OPEN_SQL: Final = (
    f"insert into arbitrage ({', '.join(COLUMNS)}) values ({', '.join(['%s'] * len(COLUMNS))})"
    " on conflict (pair, direction) where closed_at is null do update set "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:] if c != "opened_at")
)
CHANGED_SQL: Final = (
    "update arbitrage set "
    + ", ".join(f"{c} = %s" for c in COLUMNS[2:] if c != "opened_at")
    + " where pair = %s and direction = %s and closed_at is null"
)
CLOSED_SQL: Final = """
update arbitrage set closed_at = %s, lifetime_s = %s
where pair = %s and direction = %s and closed_at is null
"""
LOAD_OPEN_SQL: Final = f"select {', '.join(COLUMNS)} from arbitrage where closed_at is null"


class ArbSettings(BaseSettings):
    """Settings of flag_arbitrage: the edge it flags, the venues' taker rates, the reload."""

    model_config = SettingsConfigDict(env_prefix="MS_ARB_", extra="forbid")

    min_edge: float = Field(0.01, ge=0, lt=1)  # dollars per pair of contracts, after fees
    kalshi_fee_rate: float = Field(KALSHI_TAKER_RATE, ge=0)
    polymarket_fee_rate: float = Field(POLYMARKET_TAKER_RATE, ge=0)
    pairs_reload_s: float = Field(5.0, gt=0)


def _now_us() -> int:
    return time.time_ns() // 1000


def _leg_values(leg: ArbitrageLeg) -> list[object]:
    return [leg.venue, leg.market_id, leg.outcome, leg.price, leg.size, leg.fee]


def _values(arb: Arbitrage) -> list[object]:
    return [
        arb.pair, str(arb.direction), *_leg_values(arb.yes_leg), *_leg_values(arb.no_leg),
        arb.contracts, arb.cost, arb.edge, time_of(arb.opened_at_us), time_of(arb.observed_at_us),
    ]  # fmt: skip


def _from_row(row: tuple[Any, ...], recv_us: int) -> Arbitrage:
    def leg(values: tuple[Any, ...]) -> ArbitrageLeg:
        venue, market, outcome, price, size, fee = values
        return ArbitrageLeg(
            venue=venue, market_id=market, outcome=outcome, price=price, size=size, fee=fee
        )

    contracts, cost, edge, opened_at, observed_at = row[14:]
    return Arbitrage(
        pair=row[0],
        direction=ArbitrageDirection(row[1]),
        yes_leg=leg(row[2:8]),
        no_leg=leg(row[8:14]),
        contracts=contracts,
        cost=cost,
        edge=edge,
        opened_at_us=micros_of(opened_at),
        closed_at_us=None,
        observed_at_us=micros_of(observed_at),
        ts_recv_us=recv_us,
    )


class ArbitrageFlagger:
    def __init__(self, worker: Worker, settings: ArbSettings) -> None:
        self.worker = worker
        self.settings = settings
        self.fees = FeeModels(
            kalshi_rate=settings.kalshi_fee_rate, polymarket_rate=settings.polymarket_fee_rate
        )
        self.connection = ReusedConnection(worker.database_url, autocommit=True)
        self.dead_letters = DeadLetterPublisher(worker.publisher, worker.codec, COMPONENT)
        self.asks: dict[OutcomeKey, Ask] = {}
        self.pairs: dict[str, PairLegs] = {}
        self.by_market: dict[tuple[str, str], list[PairLegs]] = {}
        self.book = OpenArbitrage()
        self.loaded = False
        self.lock = asyncio.Lock()
        self.unmapped: set[str] = set()

    async def load_open(self) -> None:
        """Read back what was open before a restart, so that it can close."""
        if self.loaded:
            return
        db = await self.connection.get()
        for row in await (await db.execute(LOAD_OPEN_SQL)).fetchall():
            arb = _from_row(row, _now_us())
            self.book.open[arb.key] = arb
        self.loaded = True
        ARBITRAGE_OPEN.set(len(self.book.open))

    async def reload_pairs(self) -> None:
        """Take the matched pairs from the database; judge all of them again."""
        async with self.lock:
            await self.load_open()
            db = await self.connection.get()
            pairs: dict[str, PairLegs] = {}
            for pair, a_key, a_out, b_key, b_out, inverted in await (
                await db.execute(PAIRS_SQL)
            ).fetchall():
                legs = pair_legs(pair, a_key, tuple(a_out), b_key, tuple(b_out), inverted=inverted)
                if legs is None:
                    if pair not in self.unmapped:
                        log.info("%s: outcomes %s / %s are not Yes/No; skipped", pair, a_out, b_out)
                        self.unmapped.add(pair)
                    continue
                pairs[pair] = legs
            by_market: dict[tuple[str, str], list[PairLegs]] = {}
            for legs in pairs.values():
                by_market.setdefault((legs.a_venue, legs.a_market), []).append(legs)
                by_market.setdefault((legs.b_venue, legs.b_market), []).append(legs)
            self.pairs, self.by_market = pairs, by_market
            now_us = _now_us()
            gone = {a.pair for a in self.book.open.values()} - set(pairs)
            await self._judge(pairs.values(), now_us, gone)

    async def prices(self, batch: PmPriceBatch) -> None:
        """Keep the batch's asks; judge the pairs of its markets."""
        async with self.lock:
            await self.load_open()
            latest = 0
            for row in batch.rows():
                key = (batch.venue, row.market_id, row.outcome)
                held = self.asks.get(key)
                if held is None or row.ts_event_us >= held.ts_event_us:
                    self.asks[key] = Ask(row.ask_price, row.ask_size, row.ts_event_us)
                latest = max(latest, row.ts_event_us)
            touched: dict[str, PairLegs] = {}
            for market in batch.markets:
                for legs in self.by_market.get((batch.venue, market), ()):
                    touched[legs.pair] = legs
            await self._judge(touched.values(), latest, set())

    async def _judge(self, pairs: Iterable[PairLegs], at_us: int, gone: set[str]) -> None:
        changes: list[tuple[Change, Arbitrage]] = []
        recv_us = _now_us()
        for legs in pairs:
            for direction in ArbitrageDirection:
                now = judge_opportunity(
                    legs, direction, self.asks, self.fees, self.settings.min_edge
                )
                if now is None and any(k not in self.asks for k in legs.sides(direction)):
                    continue  # a leg not priced since the start: unknown, not gone
                closed_at = at_us
                if now is None:  # when its legs' latest prices say so
                    closed_at = max(
                        [at_us]
                        + [
                            a.ts_event_us
                            for k in legs.sides(direction)
                            if (a := self.asks.get(k)) is not None and math.isfinite(a.price)
                        ]
                    )
                found = self.book.judge(f"{legs.pair}|{direction}", now, closed_at, recv_us)
                if found is not None:
                    changes.append(found)
        for key in [k for k, a in self.book.open.items() if a.pair in gone]:
            found = self.book.judge(key, None, at_us, recv_us)
            if found is not None:
                changes.append(found)
        if changes:
            try:
                await self._record(changes)
            except BaseException:
                # The book already holds what failed to be written: read it back from the
                # table, so that the retry finds the same changes again.
                self.book, self.loaded = OpenArbitrage(), False
                raise
        ARBITRAGE_OPEN.set(len(self.book.open))

    async def _record(self, changes: list[tuple[Change, Arbitrage]]) -> None:
        since = self.worker.publisher.mark()
        db = await self.connection.get()
        async with db.transaction():
            for change, arb in changes:
                if change is Change.OPENED:
                    await db.execute(OPEN_SQL, _values(arb))
                elif change is Change.CHANGED:
                    values = _values(arb)  # all but opened_at, then the key
                    await db.execute(CHANGED_SQL, [*values[2:17], values[18], *values[:2]])
                else:
                    assert arb.closed_at_us is not None
                    await db.execute(
                        CLOSED_SQL,
                        (time_of(arb.closed_at_us), arb.lifetime_s, arb.pair, str(arb.direction)),
                    )
                self.worker.publisher.produce(
                    ARBITRAGE, self.worker.codec.encode_arbitrage(arb), key=arb.key.encode()
                )
                log.info(
                    "arbitrage %s: %s edge %.4f (%s)",
                    change,
                    arb.key,
                    arb.edge,
                    orjson.dumps([arb.yes_leg.price, arb.no_leg.price]).decode(),
                )
            flush = functools.partial(self.worker.publisher.flush, since=since)
            await asyncio.to_thread(flush)  # before the commit: a crash publishes twice at worst


def install(worker: Worker) -> None:
    """Declare `flag_arbitrage` and the timer that reloads the matched pairs."""
    flagger = ArbitrageFlagger(worker, load_settings(ArbSettings))

    @worker.app.agent(worker.pm_prices, name="flag_arbitrage")
    async def flag_arbitrage(stream: faust.StreamT[bytes]) -> None:
        async for event in manual_acks(stream).events():
            try:
                batch = worker.codec.decode_pm_price_batch(event.value)
            except DecodeError as exc:
                flagger.dead_letters.reject_event(event, exc.reason, str(exc))
                await asyncio.to_thread(worker.publisher.flush)
            else:
                await retry_until_done(
                    "flag_arbitrage",
                    functools.partial(flagger.prices, batch),
                    (*RETRIED, DeliveryError),  # its records are published before the commit
                )
            event.ack()

    @worker.app.timer(interval=flagger.settings.pairs_reload_s)
    async def reload_arbitrage_pairs() -> None:
        try:
            await flagger.reload_pairs()
        except (psycopg.Error, TransientError) as exc:
            log.warning("reload_arbitrage_pairs: %s", exc)
