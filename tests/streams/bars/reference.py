"""A plain-Python bar reference: obviously right, slow, and independent of the numba kernels."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

BarKey = tuple[str, str, int]


@dataclass
class RefBar:
    open: float
    high: float
    low: float
    close: float
    volume: float
    pv: float
    trade_count: int
    buy_volume: float
    sell_volume: float
    open_ts: int
    close_ts: int

    @property
    def vwap(self) -> float:
        return self.pv / self.volume


def reference_bars(
    trades: Iterable[tuple[str, int, float, float, int]], intervals: Iterable[tuple[str, int]]
) -> dict[BarKey, RefBar]:
    """Fold (symbol, ts_event_us, price, size, side) trades, in arrival order, into final bars."""
    bars: dict[BarKey, RefBar] = {}
    intervals = list(intervals)
    for symbol, ts, price, size, side in trades:
        for name, length in intervals:
            key = (symbol, name, ts - ts % length)
            bar = bars.get(key)
            if bar is None:
                bars[key] = RefBar(
                    price,
                    price,
                    price,
                    price,
                    size,
                    price * size,
                    1,
                    size if side > 0 else 0.0,
                    size if side < 0 else 0.0,
                    ts,
                    ts,
                )
                continue
            if ts < bar.open_ts:
                bar.open, bar.open_ts = price, ts
            if ts >= bar.close_ts:
                bar.close, bar.close_ts = price, ts
            bar.high = max(bar.high, price)
            bar.low = min(bar.low, price)
            bar.volume += size
            bar.pv += price * size
            bar.trade_count += 1
            bar.buy_volume += size if side > 0 else 0.0
            bar.sell_volume += size if side < 0 else 0.0
    return bars


def split_too_late(
    trades: list[tuple[str, int, float, float, int]], max_lateness_us: int
) -> tuple[list[tuple[str, int, float, float, int]], list[tuple[str, int, float, float, int]]]:
    """Split one partition's trades (arrival order) into kept and too-late ones."""
    kept, late = [], []
    watermark = None
    for trade in trades:
        if watermark is not None and trade[1] < watermark - max_lateness_us:
            late.append(trade)
            continue
        kept.append(trade)
        watermark = trade[1] if watermark is None else max(watermark, trade[1])
    return kept, late
