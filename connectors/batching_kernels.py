"""The numba kernel of connectors.batching: a batch's trades grouped by partition in one pass."""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(cache=True, nogil=True)
def partition_rows(
    instrument_index: NDArray[np.int32], symbol_partition: NDArray[np.int32], partitions: int
) -> tuple[
    NDArray[np.int64], NDArray[np.int64], NDArray[np.int32], NDArray[np.int32], NDArray[np.int64]
]:
    """Group trades by the partition of their symbol, keeping their order within a partition.

    `symbol_partition` gives the partition of each dictionary entry (any value where no trade
    uses it). Return (order, bounds, part_index, part_symbols, symbol_bounds): the trades of
    partition p are rows order[bounds[p]:bounds[p + 1]]; the symbols they use, in order of
    first use, are the dictionary entries part_symbols[symbol_bounds[p]:symbol_bounds[p + 1]];
    the trade at order[k] is of the part_index[k]-th of them.
    """
    n = instrument_index.shape[0]
    bounds = np.zeros(partitions + 1, dtype=np.int64)
    for k in range(n):
        bounds[symbol_partition[instrument_index[k]] + 1] += 1
    for p in range(partitions):
        bounds[p + 1] += bounds[p]
    fill = bounds[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    for k in range(n):
        p = symbol_partition[instrument_index[k]]
        order[fill[p]] = k
        fill[p] += 1
    position = np.full(symbol_partition.shape[0], -1, dtype=np.int32)
    part_index = np.empty(n, dtype=np.int32)
    part_symbols = np.empty(min(n, symbol_partition.shape[0]), dtype=np.int32)
    symbol_bounds = np.zeros(partitions + 1, dtype=np.int64)
    found = 0
    for p in range(partitions):
        first = found
        for k in range(bounds[p], bounds[p + 1]):
            symbol = instrument_index[order[k]]
            if position[symbol] < 0:  # a symbol belongs to one partition only
                position[symbol] = found - first
                part_symbols[found] = symbol
                found += 1
            part_index[k] = position[symbol]
        symbol_bounds[p + 1] = found
    return order, bounds, part_index, part_symbols[:found], symbol_bounds
