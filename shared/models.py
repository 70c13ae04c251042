"""Domain values: what flows through marketstream, independent of Avro and Kafka.

Timestamps are integer microseconds since the Unix epoch (UTC); the unit is in the name.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shared.bar_fields import BAR_DOUBLES


class Side(enum.IntEnum):
    """Aggressor side of a trade, as carried in `TradeBatch.side`."""

    SELL = -1
    UNKNOWN = 0
    BUY = 1


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade, as a parser produces it before it is batched."""

    instrument: str
    ts_event_us: int
    price: float
    size: float
    side: Side = Side.UNKNOWN
    trade_id: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class TradeBatch:
    """Trades as numpy columns; the instrument column is dictionary-encoded.

    Trade i is `instruments[instrument_index[i]]` at `ts_event_us[i]`, and so on. `side` and
    `trade_id` are None when no trade in the batch carries one. `watermark_us` is the source's
    event-time clock when the batch was sent; a batch without trades only advances it.
    """

    source: str
    instruments: tuple[str, ...]
    instrument_index: NDArray[np.int32]
    ts_event_us: NDArray[np.int64]
    ts_recv_us: NDArray[np.int64]
    price: NDArray[np.float64]
    size: NDArray[np.float64]
    side: NDArray[np.int8] | None = None
    trade_id: tuple[str, ...] | None = None
    watermark_us: int = 0
    provider: str | None = None  # where it is not the source itself (a failover feed)

    def __len__(self) -> int:
        return len(self.price)

    def instrument_column(self) -> list[str]:
        """Return the instrument of every trade; a per-trade Python list, for tests and tools."""
        names = self.instruments
        return [names[i] for i in self.instrument_index.tolist()]

    @classmethod
    def heartbeat(cls, source: str, watermark_us: int) -> TradeBatch:
        """Return a batch with no trades that advances the source's event-time clock."""
        empty_i64 = np.empty(0, dtype=np.int64)
        empty_f64 = np.empty(0, dtype=np.float64)
        return cls(
            source,
            (),
            np.empty(0, dtype=np.int32),
            empty_i64,
            empty_i64,
            empty_f64,
            empty_f64,
            watermark_us=watermark_us,
        )

    @classmethod
    def from_trades(cls, source: str, trades: Sequence[Trade], ts_recv_us: int) -> TradeBatch:
        """Build a batch from single trades, all received at `ts_recv_us`."""
        positions: dict[str, int] = {}
        index = [positions.setdefault(t.instrument, len(positions)) for t in trades]
        n = len(trades)
        has_side = any(t.side != Side.UNKNOWN for t in trades)
        has_id = any(t.trade_id for t in trades)
        return cls(
            source=source,
            instruments=tuple(positions),
            instrument_index=np.array(index, dtype=np.int32),
            ts_event_us=np.array([t.ts_event_us for t in trades], dtype=np.int64),
            ts_recv_us=np.full(n, ts_recv_us, dtype=np.int64),
            price=np.array([t.price for t in trades], dtype=np.float64),
            size=np.array([t.size for t in trades], dtype=np.float64),
            side=np.array([t.side for t in trades], dtype=np.int8) if has_side else None,
            trade_id=tuple(t.trade_id for t in trades) if has_id else None,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input a component could not process, with the reason (see schemas/avro/dead_letter.avsc)."""

    component: str
    reason: str
    detail: str
    source: str
    payload: bytes
    ts_event_us: int
    ts_recv_us: int
    source_partition: int | None = None
    source_offset: int | None = None
    line_number: int | None = None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Bar:
    """OHLCV bar over the event-time window [ts_us, ts_us + interval) (see schemas/avro/bar.avsc).

    The attributes are `shared.bar_fields.BAR_ATTRIBUTES`, in schema order (tested).
    """

    instrument: str
    interval: str
    ts_us: int
    revision: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float
    trade_count: int
    buy_volume: float
    sell_volume: float
    source: str
    ts_event_us: int
    ts_recv_us: int
    seq: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class BarBatch:
    """Bars as columns (see schemas/avro/bar_batch.avsc), so that bulk work needs no object per bar.

    Bar i is of `instruments[instrument_index[i]]`, `intervals[interval_index[i]]` and
    `sources[source_index[i]]`; the dictionaries may hold names no bar uses.
    """

    instruments: Sequence[str]
    intervals: Sequence[str]
    sources: Sequence[str]
    instrument_index: NDArray[np.int64]
    interval_index: NDArray[np.int64]
    source_index: NDArray[np.int64]
    ts_us: NDArray[np.int64]
    revision: NDArray[np.int64]
    trade_count: NDArray[np.int64]
    ts_event_us: NDArray[np.int64]
    seq: NDArray[np.int64]
    doubles: NDArray[np.float64]  # (bars, 8): BAR_DOUBLES
    ts_recv_us: int

    def __len__(self) -> int:
        return len(self.instrument_index)

    @classmethod
    def from_bars(cls, bars: Sequence[Bar], unused_names: Sequence[str] = ()) -> BarBatch:
        """Return bars that share one `ts_recv_us` as columns: the inverse of `bars()`, for
        tools and tests. `unused_names` open every dictionary, as an aggregator's hold names
        that no bar of a batch uses."""
        (ts_recv_us,) = {bar.ts_recv_us for bar in bars}

        def dictionary(values: list[str]) -> tuple[list[str], NDArray[np.int64]]:
            names = list(dict.fromkeys([*unused_names, *values]))
            code = {name: i for i, name in enumerate(names)}
            return names, np.array([code[v] for v in values], np.int64)

        def longs(attribute: str) -> NDArray[np.int64]:
            return np.array([getattr(bar, attribute) for bar in bars], np.int64)

        instruments, instrument_index = dictionary([bar.instrument for bar in bars])
        intervals, interval_index = dictionary([bar.interval for bar in bars])
        sources, source_index = dictionary([bar.source for bar in bars])
        return cls(
            instruments=instruments,
            intervals=intervals,
            sources=sources,
            instrument_index=instrument_index,
            interval_index=interval_index,
            source_index=source_index,
            ts_us=longs("ts_us"),
            revision=longs("revision"),
            trade_count=longs("trade_count"),
            ts_event_us=longs("ts_event_us"),
            seq=longs("seq"),
            doubles=np.array([[getattr(bar, f) for f in BAR_DOUBLES] for bar in bars], np.float64),
            ts_recv_us=ts_recv_us,
        )

    def bars(self) -> list[Bar]:
        """The bars as `Bar` objects, in order."""
        return [
            Bar(
                instrument=self.instruments[instrument],
                interval=self.intervals[interval],
                ts_us=ts_us,
                revision=revision,
                trade_count=trade_count,
                source=self.sources[source],
                ts_event_us=ts_event_us,
                ts_recv_us=self.ts_recv_us,
                seq=seq,
                **dict(zip(BAR_DOUBLES, doubles, strict=True)),
            )
            for instrument, interval, source, ts_us, revision, trade_count, ts_event_us, seq, doubles in zip(
                self.instrument_index.tolist(),
                self.interval_index.tolist(),
                self.source_index.tolist(),
                self.ts_us.tolist(),
                self.revision.tolist(),
                self.trade_count.tolist(),
                self.ts_event_us.tolist(),
                self.seq.tolist(),
                self.doubles.tolist(),
                strict=True,
            )
        ]


@dataclass(frozen=True, slots=True, eq=False)
class QuoteBatch:
    """Top-of-book quotes as numpy columns, dictionary-encoded like TradeBatch."""

    source: str
    instruments: tuple[str, ...]
    instrument_index: NDArray[np.int32]
    ts_event_us: NDArray[np.int64]
    ts_recv_us: NDArray[np.int64]
    bid_price: NDArray[np.float64]
    bid_size: NDArray[np.float64]
    ask_price: NDArray[np.float64]
    ask_size: NDArray[np.float64]
    provider: str | None = None

    def __len__(self) -> int:
        return len(self.ts_event_us)

    def select(self, rows: NDArray[np.intp]) -> QuoteBatch:
        """The quotes `rows`, with the same dictionary."""
        return QuoteBatch(
            self.source,
            self.instruments,
            self.instrument_index[rows],
            self.ts_event_us[rows],
            self.ts_recv_us[rows],
            self.bid_price[rows],
            self.bid_size[rows],
            self.ask_price[rows],
            self.ask_size[rows],
            self.provider,
        )


@dataclass(frozen=True, slots=True, eq=False)
class ProviderBarBatch:
    """Bars a provider computed (Alpaca's minute bars and their revisions, Yahoo's chart,
    Alpha Vantage's intraday series), as columns, one interval per batch.

    Bar i is of `instruments[instrument_index[i]]` over [ts_us[i], ts_us[i] + interval). A
    provider's later revision of a bar (Alpaca's `updatedBars`) has a higher `revision`.
    `vwap` and `trade_count` are NaN and -1 where the provider gives none.
    """

    source: str
    provider: str
    interval: str  # as shared.intervals names it: 1m, 5m, 1h, 1d ...
    instruments: tuple[str, ...]
    instrument_index: NDArray[np.int32]
    ts_us: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]
    vwap: NDArray[np.float64]
    trade_count: NDArray[np.int64]
    revision: NDArray[np.int32]
    ts_recv_us: int
    ts_event_us: NDArray[np.int64] | None = None  # the provider's update times; None: window ends

    def __len__(self) -> int:
        return len(self.ts_us)

    def select(self, rows: NDArray[np.intp]) -> ProviderBarBatch:
        """The bars `rows`, with the same dictionary."""
        return ProviderBarBatch(
            self.source,
            self.provider,
            self.interval,
            self.instruments,
            self.instrument_index[rows],
            self.ts_us[rows],
            self.open[rows],
            self.high[rows],
            self.low[rows],
            self.close[rows],
            self.volume[rows],
            self.vwap[rows],
            self.trade_count[rows],
            self.revision[rows],
            self.ts_recv_us,
            None if self.ts_event_us is None else self.ts_event_us[rows],
        )


@dataclass(frozen=True, slots=True)
class FundamentalStatement:
    """One financial statement of a company for one fiscal period, as a provider reports it.

    `statement`: profile, income_statement, balance_sheet, cash_flow, ratios or key_metrics;
    `period`: annual, quarter (or snapshot, for a profile); `fiscal_date`: the period's end,
    ISO yyyy-mm-dd; `body`: the provider's JSON object, as received.
    """

    symbol: str
    statement: str
    period: str
    fiscal_date: str
    provider: str
    body: bytes
    ts_event_us: int  # when the provider filed or last updated it, if it says; else ts_recv
    ts_recv_us: int


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """A change in a feed's connection (see schemas/avro/feed_event.avsc): where it was blind."""

    source: str
    kind: str  # disconnected, down, reconnected
    detail: str
    blind_since_us: int | None
    ts_event_us: int
    ts_recv_us: int


class GapCause(enum.StrEnum):
    """Why bars are missing; the symbols of the `GapCause` enum in schemas/avro/gap.avsc (tested)."""

    DISCONNECT = "disconnect"  # a feed reported it was blind (FeedEvent)
    SILENCE = "silence"  # no data where the instrument's tier expects it
    PROVIDER_ERROR = "provider_error"  # a provider said it failed or halted
    MANUAL = "manual"  # an operator asked
    SWEEP = "sweep"  # the periodic database check found the hole


@dataclass(frozen=True, slots=True)
class InstrumentStatus:
    """A provider's word on an instrument's trading (schemas/avro/instrument_status.avsc): a
    halt or pause (`halted`), or trading again."""

    instrument: str
    halted: bool
    status_code: str
    status: str
    reason_code: str
    reason: str
    source: str
    ts_event_us: int
    ts_recv_us: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing bars of one instrument and interval over [start_us, end_us) (schemas/avro/gap.avsc).

    The same instrument, interval, start and end is the same gap. `detected_at_us` is the
    record's `ts_event`: when the detector concluded, on its clock.
    """

    instrument: str
    interval: str
    start_us: int
    end_us: int
    cause: GapCause
    detail: str
    detected_at_us: int
    ts_recv_us: int
    provider: str | None = None  # the feed that was blind, if one was
    tier: str | None = None  # T0, T1 or T2, if known


class ListingStatus(enum.StrEnum):
    """Where a prediction market is in its life, the same for every venue (Listing.status)."""

    UPCOMING = "upcoming"  # listed, not trading yet
    OPEN = "open"
    PAUSED = "paused"  # listed and not closed, but not trading now
    CLOSED = "closed"  # trading over, outcome not final
    SETTLED = "settled"  # outcome final, paid out

    @property
    def live(self) -> bool:
        """True while the market may still trade (the venue will list it again)."""
        return self in (ListingStatus.UPCOMING, ListingStatus.OPEN, ListingStatus.PAUSED)


@dataclass(frozen=True, slots=True)
class Listing:
    """One prediction market as a venue lists it (schemas/avro/listing.avsc)."""

    venue: str
    market_id: str
    event_id: str | None
    title: str
    subtitle: str
    rules: str
    category: str
    close_time_us: int | None
    outcomes: tuple[str, ...]
    status: ListingStatus
    venue_status: str
    url: str | None
    ts_event_us: int
    ts_recv_us: int

    @property
    def key(self) -> str:
        """The Kafka key of md.listings.v1: `venue:market_id`."""
        return f"{self.venue}:{self.market_id}"

    def same_content(self, other: Listing) -> bool:
        """True if `other` lists the market the same way (timestamps aside)."""
        return (
            self.event_id, self.title, self.subtitle, self.rules, self.category,
            self.close_time_us, self.outcomes, self.status, self.venue_status, self.url,
        ) == (
            other.event_id, other.title, other.subtitle, other.rules, other.category,
            other.close_time_us, other.outcomes, other.status, other.venue_status, other.url,
        )  # fmt: skip


@dataclass(frozen=True, slots=True, eq=False)
class PmPriceBatch:
    """Best bid and ask per prediction-market outcome, as columns (schemas/avro/pm_price_batch.avsc).

    Row i is outcome `outcomes[outcome_index[i]]` of market `markets[market_index[i]]`; prices
    are probabilities in [0, 1], NaN where the book has no bid or no ask.
    """

    venue: str
    markets: tuple[str, ...]
    market_index: NDArray[np.int32]
    outcomes: tuple[str, ...]
    outcome_index: NDArray[np.int32]
    bid_price: NDArray[np.float64]
    bid_size: NDArray[np.float64]
    ask_price: NDArray[np.float64]
    ask_size: NDArray[np.float64]
    ts_event_us: NDArray[np.int64]
    ts_recv_us: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.market_index)

    def keys(self) -> list[str]:
        """Every row's `venue:market_id`, the key md.pm_prices.v1 is partitioned by."""
        return [f"{self.venue}:{self.markets[i]}" for i in self.market_index.tolist()]

    def select(self, rows: NDArray[np.intp]) -> PmPriceBatch:
        """The rows `rows`, with the same dictionaries."""
        return PmPriceBatch(
            self.venue,
            self.markets,
            self.market_index[rows],
            self.outcomes,
            self.outcome_index[rows],
            self.bid_price[rows],
            self.bid_size[rows],
            self.ask_price[rows],
            self.ask_size[rows],
            self.ts_event_us[rows],
            self.ts_recv_us[rows],
        )

    @classmethod
    def from_rows(cls, venue: str, rows: Sequence[PmPrice]) -> PmPriceBatch:
        """Build a batch from single rows (a parser's output)."""
        markets: dict[str, int] = {}
        outcomes: dict[str, int] = {}
        market_index = [markets.setdefault(r.market_id, len(markets)) for r in rows]
        outcome_index = [outcomes.setdefault(r.outcome, len(outcomes)) for r in rows]

        def column(name: str, dtype: type) -> NDArray[Any]:
            return np.array([getattr(r, name) for r in rows], dtype=dtype)

        return cls(
            venue=venue,
            markets=tuple(markets),
            market_index=np.array(market_index, dtype=np.int32),
            outcomes=tuple(outcomes),
            outcome_index=np.array(outcome_index, dtype=np.int32),
            bid_price=column("bid_price", np.float64),
            bid_size=column("bid_size", np.float64),
            ask_price=column("ask_price", np.float64),
            ask_size=column("ask_size", np.float64),
            ts_event_us=column("ts_event_us", np.int64),
            ts_recv_us=column("ts_recv_us", np.int64),
        )

    def rows(self) -> list[PmPrice]:
        """The rows as `PmPrice` values, in order (for tests and tools)."""
        return [
            PmPrice(self.markets[m], self.outcomes[o], bp, bs, ap, az, te, tr)
            for m, o, bp, bs, ap, az, te, tr in zip(
                self.market_index.tolist(),
                self.outcome_index.tolist(),
                self.bid_price.tolist(),
                self.bid_size.tolist(),
                self.ask_price.tolist(),
                self.ask_size.tolist(),
                self.ts_event_us.tolist(),
                self.ts_recv_us.tolist(),
                strict=True,
            )
        ]


@dataclass(frozen=True, slots=True)
class PmPrice:
    """One row of a PmPriceBatch: the best bid and ask of one outcome of one market."""

    market_id: str
    outcome: str
    bid_price: float  # probability in [0, 1]; NaN: no bid
    bid_size: float
    ask_price: float  # NaN: no ask
    ask_size: float
    ts_event_us: int
    ts_recv_us: int


class MatchDecision(enum.StrEnum):
    """Whether two listings ask the same question (Match.decision)."""

    NO_MATCH = "no_match"
    REVIEW = "review"
    MATCH = "match"


class MatchDecider(enum.StrEnum):
    """Who decided a pair: the matcher's thresholds, or a person (whose decision sticks)."""

    AUTO = "auto"
    PERSON = "person"


def pair_key(a_key: str, b_key: str) -> str:
    """The key of a pair of listings (`venue:market_id` each, Kalshi's first): `a|b`."""
    return f"{a_key}|{b_key}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """A scored pair of listings and the decision in force (schemas/avro/match.avsc)."""

    a_venue: str
    a_market_id: str
    b_venue: str
    b_market_id: str
    score: float
    rank: int
    decision: MatchDecision
    decided_by: MatchDecider
    auto_decision: MatchDecision
    inverted: bool
    agreed: tuple[str, ...]
    differed: tuple[str, ...]
    one_sided: tuple[str, ...]
    warnings: tuple[str, ...]
    ts_event_us: int
    ts_recv_us: int

    @property
    def key(self) -> str:
        """The Kafka key of md.matches.v1 (`pair_key` of the two listings)."""
        return pair_key(f"{self.a_venue}:{self.a_market_id}", f"{self.b_venue}:{self.b_market_id}")


class ArbitrageDirection(enum.StrEnum):
    """Which listing of a pair the YES is bought on."""

    YES_A_NO_B = "yes_a_no_b"
    NO_A_YES_B = "no_a_yes_b"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArbitrageLeg:
    """One outcome bought at its best ask; `fee` is for `Arbitrage.contracts` of it, dollars."""

    venue: str
    market_id: str
    outcome: str
    price: float
    size: float | None
    fee: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Arbitrage:
    """YES on one venue and NO on the other for less than 1 after fees
    (schemas/avro/arbitrage.avsc); `closed_at_us` is None while it lasts."""

    pair: str
    direction: ArbitrageDirection
    yes_leg: ArbitrageLeg
    no_leg: ArbitrageLeg
    contracts: float
    cost: float
    edge: float
    opened_at_us: int
    closed_at_us: int | None
    observed_at_us: int
    ts_recv_us: int

    @property
    def key(self) -> str:
        """The Kafka key of md.arbitrage.v1: `pair|direction`."""
        return f"{self.pair}|{self.direction}"

    @property
    def lifetime_s(self) -> float | None:
        if self.closed_at_us is None:
            return None
        return (self.closed_at_us - self.opened_at_us) / 1e6
