"""The gaps scenario's timeline, live feed and reference: what each path feeds and checks.

The timeline is anchored to the wall clock, because the sweep judges the last hours before
now: H is the last hour that started at least five minutes before the run, minus one hour; the
outage ends at H + 30 min and starts the outage's length earlier; the live feed's history
starts at H - 2 h. The span a 1h-window backfill fetches is the outage widened to whole hours,
[floor_hour(start), ceil_hour(end)), one or two hours; every bar of it is compared with a fold
of the fake's trades. The instruments are crypto pairs (the fake prints one in every minute of
the UTC day), so a T0 expectation holds at any hour of any day the benchmark is run.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import psycopg
from numpy.typing import NDArray

from benchmarks.gaps_fake import trades_between
from shared.codec import Codec
from shared.models import Side, TradeBatch
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.times import micros_of, time_of
from shared.topics import TRADES

log = logging.getLogger(__name__)

MINUTE_US: Final = 60_000_000
HOUR_US: Final = 60 * MINUTE_US
DAY_US: Final = 24 * HOUR_US
INTERVALS: Final = {"1m": MINUTE_US, "5m": 5 * MINUTE_US, "1h": HOUR_US}
LIVE_SOURCE: Final = "alpaca"
MESSAGE_TRADES: Final = 10_000  # trades per TradeBatch the feed publishes
VOLUME_RTOL: Final = 1e-9  # summed sizes: the same trades, maybe another order of additions
BARS_SQL: Final = """
select instrument, interval, ts, open, high, low, close, volume, trade_count from bars
where instrument = any(%s) and interval = any(%s) and ts >= %s and ts < %s
"""

Ohlcvn = tuple[float, float, float, float, float, int]


def instruments(count: int) -> list[str]:
    """`count` crypto pairs the fake makes up trades for, G000/USD, G001/USD, ..."""
    return [f"G{i:03d}/USD" for i in range(count)]


@dataclass(frozen=True, slots=True)
class Timeline:
    """One path's times, µs since the epoch (see the module's docstring)."""

    outage_minutes: int
    feed_start_us: int
    outage_start_us: int
    outage_end_us: int
    span_start_us: int
    span_end_us: int

    @classmethod
    def plan(cls, now_us: int, outage_minutes: int) -> Timeline:
        anchor = (now_us - 5 * MINUTE_US) // HOUR_US * HOUR_US - HOUR_US
        end = anchor + 30 * MINUTE_US
        start = end - outage_minutes * MINUTE_US
        return cls(
            outage_minutes=outage_minutes,
            feed_start_us=anchor - 2 * HOUR_US,
            outage_start_us=start,
            outage_end_us=end,
            span_start_us=start // HOUR_US * HOUR_US,
            span_end_us=-(-end // HOUR_US) * HOUR_US,
        )

    def sweep_hours(self, now_us: int) -> float:
        """A sweep horizon whose start never falls before the feed's first trade: it ends two
        minutes before the sweep (streams.gaps.agent.SETTLE_US) and is judged later than now."""
        return (now_us - 3 * MINUTE_US - self.feed_start_us) / HOUR_US

    def to_json(self) -> dict[str, str | int]:
        return {
            "outage_minutes": self.outage_minutes,
            "feed_start": time_of(self.feed_start_us).isoformat(),
            "outage": f"[{time_of(self.outage_start_us)}, {time_of(self.outage_end_us)})",
            "span_compared": f"[{time_of(self.span_start_us)}, {time_of(self.span_end_us)})",
        }


@dataclass(frozen=True, slots=True)
class Trades:
    """One instrument's trades, in time order."""

    ts_us: NDArray[np.int64]
    price: NDArray[np.float64]
    size: NDArray[np.float64]
    side: NDArray[np.int8]

    @classmethod
    def load(cls, symbol: str, start_us: int, end_us: int, density: int) -> Trades:
        tape = trades_between(symbol, start_us, end_us, density=density)
        side = np.where(tape.taker == "B", Side.BUY, Side.SELL).astype(np.int8)
        return cls(tape.ts_ns // 1000, tape.price, tape.size, side)

    def rows(self, start_us: int, end_us: int) -> slice:
        lo, hi = np.searchsorted(self.ts_us, [start_us, end_us])
        return slice(int(lo), int(hi))


class LiveFeed:
    """The fake's trades published as the live `alpaca` feed, each partition in time order."""

    def __init__(
        self, publisher: Publisher, codec: Codec, trades: dict[str, Trades], partitions: int
    ) -> None:
        self.publisher = publisher
        self.codec = codec
        self.trades = trades
        self.by_partition: dict[int, list[str]] = {}
        for symbol in trades:
            self.by_partition.setdefault(partition_for(symbol, partitions), []).append(symbol)
        self.partitions = partitions
        self.published = 0

    def publish(self, start_us: int, end_us: int) -> int:
        """Queue the trades of [start_us, end_us), the clock at end_us - 1 after; return them."""
        now_us = time.time_ns() // 1000
        count = 0
        for partition in range(self.partitions):
            symbols = self.by_partition.get(partition, [])
            parts = [(i, self.trades[s], self.trades[s].rows(start_us, end_us)) for i, s in
                     enumerate(symbols)]  # fmt: skip
            index = np.concatenate(
                [np.full(t.ts_us[r].size, i, np.int32) for i, t, r in parts]
                or [np.empty(0, np.int32)]
            )
            ts = np.concatenate([t.ts_us[r] for _, t, r in parts] or [np.empty(0, np.int64)])
            order = np.argsort(ts, kind="stable")
            columns = {
                "price": np.concatenate([t.price[r] for _, t, r in parts] or [np.empty(0)]),
                "size": np.concatenate([t.size[r] for _, t, r in parts] or [np.empty(0)]),
                "side": np.concatenate([t.side[r] for _, t, r in parts] or [np.empty(0, np.int8)]),
            }
            for chunk in np.array_split(order, max(1, math.ceil(order.size / MESSAGE_TRADES))):
                if not chunk.size:
                    continue
                batch = TradeBatch(
                    source=LIVE_SOURCE,
                    instruments=tuple(symbols),
                    instrument_index=index[chunk],
                    ts_event_us=ts[chunk],
                    ts_recv_us=np.full(chunk.size, now_us, np.int64),
                    price=columns["price"][chunk],
                    size=columns["size"][chunk],
                    side=columns["side"][chunk],
                    watermark_us=int(ts[chunk].max()),
                )
                self._send(batch, partition)
                count += chunk.size
            self._send(TradeBatch.heartbeat(LIVE_SOURCE, end_us - 1), partition)
        self.published += count
        return count

    def _send(self, batch: TradeBatch, partition: int) -> None:
        self.publisher.produce(TRADES, self.codec.encode_trade_batch(batch), partition=partition)

    async def follow(self, since_us: int, stopping: asyncio.Event, tick_s: float = 1.0) -> None:
        """Publish the trades as they happen, from `since_us`, every `tick_s`, until `stopping`."""
        cut_us = since_us
        while not stopping.is_set():
            now_us = time.time_ns() // 1000
            if now_us > cut_us:
                self.publish(cut_us, now_us)
                cut_us = now_us
            await asyncio.to_thread(self.publisher.poll, 0.0)
            try:
                await asyncio.wait_for(stopping.wait(), tick_s)
            except TimeoutError:
                pass


def reference(trades: Trades, start_us: int, end_us: int) -> dict[tuple[str, int], Ohlcvn]:
    """Every bar of [start_us, end_us) of INTERVALS folded from `trades`: (interval, start)."""
    rows = trades.rows(start_us, end_us)
    ts, price, size = trades.ts_us[rows], trades.price[rows], trades.size[rows]
    bars: dict[tuple[str, int], Ohlcvn] = {}
    if not ts.size:
        return bars
    for name, length in INTERVALS.items():
        bucket = ts - ts % length
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:], ts.size] - 1
        volume = np.add.reduceat(size, starts)
        high, low = np.maximum.reduceat(price, starts), np.minimum.reduceat(price, starts)
        for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            bars[(name, int(bucket[s]))] = (
                float(price[s]),
                float(high[k]),
                float(low[k]),
                float(price[e]),
                float(volume[k]),
                e - s + 1,
            )
    return bars


@dataclass(frozen=True, slots=True)
class Comparison:
    """How the stored bars of the span compare with the reference."""

    expected: int
    equal: int
    missing: int
    different: int
    extra: int
    example: str | None

    @property
    def all_equal(self) -> bool:
        return self.equal == self.expected and self.extra == 0


def compare(
    conn: psycopg.Connection[Any],
    expected: dict[str, dict[tuple[str, int], Ohlcvn]],
    start_us: int,
    end_us: int,
) -> Comparison:
    """Compare the stored bars of the instruments in [start_us, end_us) with `expected`:
    OHLC and trade counts exactly, volumes within VOLUME_RTOL."""
    rows = conn.execute(
        BARS_SQL, (list(expected), list(INTERVALS), time_of(start_us), time_of(end_us))
    ).fetchall()
    stored: dict[tuple[str, str, int], tuple[Any, ...]] = {
        (r[0], r[1], micros_of(r[2])): r[3:] for r in rows
    }
    equal = different = missing = 0
    example = None
    for instrument, bars in expected.items():
        for (interval, ts_us), want in bars.items():
            got = stored.pop((instrument, interval, ts_us), None)
            if got is None:
                missing += 1
                example = example or f"{instrument} {interval} {time_of(ts_us)} missing"
            elif _same(got, want):
                equal += 1
            else:
                different += 1
                example = example or f"{instrument} {interval} {time_of(ts_us)}: {got} != {want}"
    total = sum(len(b) for b in expected.values())
    return Comparison(total, equal, missing, different, len(stored), example)


def _same(got: Sequence[Any], want: Ohlcvn) -> bool:
    o, h, low, c, v, n = want
    return (float(got[0]), float(got[1]), float(got[2]), float(got[3]), int(got[5])) == (
        o,
        h,
        low,
        c,
        n,
    ) and abs(float(got[4]) - v) <= VOLUME_RTOL * max(1.0, abs(v))
