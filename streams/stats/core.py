"""Fold trade batches into per-instrument tallies: count, volume, last price and time.

Per batch the work is a numba pass and two numpy calls plus one dictionary update per
instrument in the batch, never one per trade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from shared.models import TradeBatch


@numba.njit(cache=True, nogil=True)
def latest_rows(index: NDArray[np.int32], ts: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    """Per instrument, the row of its latest trade by event time (ties: the later row); -1: none."""
    rows = np.full(n, -1, np.int64)
    for t in range(index.shape[0]):
        i = index[t]
        if rows[i] < 0 or ts[t] >= ts[rows[i]]:
            rows[i] = t
    return rows


@dataclass(slots=True)
class InstrumentTally:
    trades: int = 0
    volume: float = 0.0
    last_price: float = 0.0
    last_ts_event_us: int = -(2**63)  # before any representable trade, pre-1970 ones included
    source: str = ""


class TradeTally:
    """Running tallies since the process started."""

    def __init__(self) -> None:
        self.instruments: dict[str, InstrumentTally] = {}
        self.trades = 0
        self.batches = 0

    def fold(self, batch: TradeBatch) -> None:
        """Add one batch; last price is that of the latest trade by event time."""
        n_symbols = len(batch.instruments)
        if len(batch) == 0:
            return
        counts = np.bincount(batch.instrument_index, minlength=n_symbols)
        volumes = np.bincount(batch.instrument_index, weights=batch.size, minlength=n_symbols)
        last_rows = latest_rows(batch.instrument_index, batch.ts_event_us, n_symbols)
        for row in last_rows[last_rows >= 0].tolist():
            i = int(batch.instrument_index[row])
            tally = self.instruments.setdefault(batch.instruments[i], InstrumentTally())
            tally.trades += int(counts[i])
            tally.volume += float(volumes[i])
            ts = int(batch.ts_event_us[row])
            if ts >= tally.last_ts_event_us:
                tally.last_ts_event_us = ts
                tally.last_price = float(batch.price[row])
            tally.source = batch.source
        self.trades += len(batch)
        self.batches += 1

    def snapshot(self) -> dict[str, object]:
        return {
            "trades": self.trades,
            "batches": self.batches,
            "instruments": {
                name: {
                    "trades": t.trades,
                    "volume": t.volume,
                    "last_price": t.last_price,
                    "last_ts_event_us": t.last_ts_event_us,
                    "source": t.source,
                }
                for name, t in sorted(self.instruments.items())
            },
        }
