"""Bars as a live feed produces them (2026 times, real prices), alone and as BarBatch messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from shared.models import Bar, BarBatch
from streams.sink.copy import COLUMNS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_767_623_400_000_000  # 2026-01-05T14:30:00Z
MINUTE_US = 60_000_000
RECV_1 = T0 + MINUTE_US + 48_211  # the aggregation step that closed the 14:30 bars
RECV_2 = T0 + 2 * MINUTE_US + 51_907  # the next one


def bar(
    instrument: str = "AAPL",
    interval: str = "1m",
    ts_us: int = T0,
    revision: int = 0,
    ts_recv_us: int = RECV_1,
    **values: object,
) -> Bar:
    fields: dict[str, object] = dict(
        open=243.10,
        high=243.55,
        low=242.98,
        close=243.41,
        volume=18_250.0,
        vwap=243.2712,
        trade_count=412,
        buy_volume=10_100.0,
        sell_volume=8_150.0,
        source="alpaca",
        ts_event_us=ts_us + 59_812_345,
        seq=7,
    )
    fields |= values
    return Bar(instrument, interval, ts_us, revision, ts_recv_us=ts_recv_us, **fields)  # type: ignore[arg-type]


def bar_batch(bars: Sequence[Bar], unused: str = "MSFT") -> BarBatch:
    """The bars as one BarBatch, as the aggregator sends them: one ts_recv, and dictionaries
    that also hold a name no bar uses."""
    return BarBatch.from_bars(bars, unused_names=[unused])


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def read_bars(conn: psycopg.Connection, table: str = "bars") -> list[Bar]:
    """Every row of `table` as a Bar, in key order, timestamps as UTC microseconds."""
    rows = conn.execute(
        f"select {', '.join(COLUMNS)} from {table} order by instrument, interval, ts"
    ).fetchall()
    return [
        Bar(i, n, micros(ts), rev, *values, source, micros(ev), micros(rv), seq)  # type: ignore[call-arg]
        for i, n, ts, rev, *values, source, ev, rv, seq in rows
    ]
