"""Which rows of a batch are each instrument's latest: pure numpy, no Kafka or database.

A batch holds many trades (or quotes) of a few instruments; only the one with the latest event
time of each instrument is kept, the later row winning a tie (the provider sent it last).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def latest_rows(
    instrument_index: NDArray[np.int32], ts_event_us: NDArray[np.int64]
) -> NDArray[np.intp]:
    """The row of each instrument present with the greatest `ts_event_us` (the last of equals),
    in the order of the instruments' indexes."""
    if not len(instrument_index):
        return np.empty(0, dtype=np.intp)
    rows = np.arange(len(instrument_index))
    order = np.lexsort((rows, ts_event_us, instrument_index))
    by_instrument = instrument_index[order]
    last = np.flatnonzero(np.append(by_instrument[1:] != by_instrument[:-1], True))
    return order[last].astype(np.intp)
