"""Fold trade batches into per-instrument tallies: count, volume, last price and time.

Per batch the work is a handful of numpy calls plus one dictionary update per instrument in the
batch, never one per trade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streams.models import TradeBatch


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
        order = np.lexsort((np.arange(len(batch)), batch.ts_event_us, batch.instrument_index))
        last_rows = order[
            np.r_[batch.instrument_index[order][1:] != batch.instrument_index[order][:-1], True]
        ]
        for row in last_rows.tolist():
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
