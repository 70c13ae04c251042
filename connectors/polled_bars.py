"""Bars a provider computed, polled again and again: only what is new or changed goes on.

A polling connector (Yahoo's chart, Alpha Vantage's intraday series) gets the same bars on
every poll, and the still-forming last one with new values each time. `BarRevisions` keeps,
per instrument, the values last published for every bar start and passes on only the bars
that are new (revision 0) or whose values changed (the last revision + 1). Pure: no HTTP here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shared.models import ProviderBarBatch

Row = tuple[int, float, float, float, float, float]  # ts_us, open, high, low, close, volume


@dataclass(frozen=True, slots=True, eq=False)
class Bars:
    """One instrument's bars as columns, in time order: bar i is over [ts_us[i], ts_us[i] +
    interval), `ts_us` in microseconds since the epoch (UTC)."""

    ts_us: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.ts_us)

    @classmethod
    def from_rows(cls, rows: Sequence[Row]) -> Bars:
        """Columns from (ts_us, open, high, low, close, volume) rows, sorted by time."""
        ordered = sorted(rows, key=lambda row: row[0])
        columns = list(zip(*ordered, strict=True)) if ordered else [()] * 6
        f64 = [np.array(c, dtype=np.float64) for c in columns[1:]]
        return cls(np.array(columns[0], dtype=np.int64), *f64)

    def rows(self) -> list[Row]:
        """The bars as rows, for tests and tools."""
        return list(
            zip(
                self.ts_us.tolist(),
                self.open.tolist(),
                self.high.tolist(),
                self.low.tolist(),
                self.close.tolist(),
                self.volume.tolist(),
                strict=True,
            )
        )


class BarRevisions:
    """The bars published so far, per instrument: which bars of a poll are new or changed."""

    def __init__(self) -> None:
        # instrument -> bar start (µs) -> (open, high, low, close, volume), revision
        self._published: dict[str, dict[int, tuple[tuple[float, ...], int]]] = {}

    def update(self, instrument: str, bars: Bars) -> tuple[NDArray[np.intp], NDArray[np.int32]]:
        """Return the positions in `bars` of the bars new or changed since the last update of
        `instrument`, with their revisions, and remember them as published.

        Bars that start before the first of `bars` are forgotten: they left the provider's
        window, so they cannot change any more.
        """
        known = self._published.setdefault(instrument, {})
        rows: list[int] = []
        revisions: list[int] = []
        for i, (ts_us, *values) in enumerate(bars.rows()):
            seen = known.get(ts_us)
            if seen is None:
                revision = 0
            elif seen[0] == tuple(values):
                continue
            else:
                revision = seen[1] + 1
            known[ts_us] = (tuple(values), revision)
            rows.append(i)
            revisions.append(revision)
        if len(bars):
            first_us = int(bars.ts_us[0])
            for ts_us in [t for t in known if t < first_us]:
                del known[ts_us]
        return np.array(rows, dtype=np.intp), np.array(revisions, dtype=np.int32)

    def published(self, instrument: str) -> int:
        """How many bars of `instrument` are remembered."""
        return len(self._published.get(instrument, {}))


def provider_batch(
    *,
    source: str,
    provider: str,
    interval: str,
    instrument: str,
    bars: Bars,
    rows: NDArray[np.intp],
    revisions: NDArray[np.int32],
    ts_recv_us: int,
) -> ProviderBarBatch:
    """The bars `rows` of one instrument as a ProviderBarBatch (no vwap, no trade count)."""
    n = len(rows)
    return ProviderBarBatch(
        source=source,
        provider=provider,
        interval=interval,
        instruments=(instrument,),
        instrument_index=np.zeros(n, dtype=np.int32),
        ts_us=bars.ts_us[rows],
        open=bars.open[rows],
        high=bars.high[rows],
        low=bars.low[rows],
        close=bars.close[rows],
        volume=bars.volume[rows],
        vwap=np.full(n, np.nan, dtype=np.float64),
        trade_count=np.full(n, -1, dtype=np.int64),
        revision=revisions,
        ts_recv_us=ts_recv_us,
    )
