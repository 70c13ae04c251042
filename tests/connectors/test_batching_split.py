"""PartitionBatcher's deferred split: chunks split together, each trade's wait counted from its
own chunk; and the partition_rows kernel against a plain numpy reference."""

from __future__ import annotations

import numpy as np

from connectors.batching import PartitionBatcher
from connectors.batching_kernels import partition_rows
from shared.models import TradeBatch
from shared.partitioning import partition_for

PARTITIONS = 4
T0_S = 1_000.0


def _chunk(symbols: tuple[str, ...], index: list[int], first_seq: int = 0) -> TradeBatch:
    n = len(index)
    seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
    return TradeBatch(
        source="test",
        instruments=symbols,
        instrument_index=np.asarray(index, dtype=np.int32),
        ts_event_us=1_767_623_400_000_000 + seq,
        ts_recv_us=1_767_623_500_000_000 + seq,
        price=100.0 + seq / 100,
        size=seq.astype(np.float64) + 1,
        trade_id=tuple(f"id{s}" for s in seq.tolist()),
    )


def _two_symbols_of_other_partitions() -> tuple[str, str]:
    symbols = ["AAPL", "MSFT", "TSLA", "NVDA", "META", "AMZN", "GOOG", "AMD"]
    first = symbols[0]
    other = next(
        s for s in symbols if partition_for(s, PARTITIONS) != partition_for(first, PARTITIONS)
    )
    return first, other


def test_partition_batcher_due_counts_each_trade_from_its_own_chunk() -> None:
    # Arrange: an old chunk for one partition, a young one for another, neither split yet
    old, young = _two_symbols_of_other_partitions()
    batcher = PartitionBatcher(PARTITIONS, max_trades=1_000, linger_s=5.0)
    assert batcher.add(_chunk((old,), [0, 0], 0), now_s=T0_S) == []
    assert batcher.add(_chunk((young,), [0], 2), now_s=T0_S + 4.0) == []

    # Act
    before_linger = batcher.due(now_s=T0_S + 4.9)
    first = batcher.due(now_s=T0_S + 5.0)
    second = batcher.due(now_s=T0_S + 9.0)

    # Assert
    assert before_linger == []
    assert [(p, b.instrument_column()) for p, b in first] == [
        (partition_for(old, PARTITIONS), [old, old])
    ]
    assert [(p, b.instrument_column()) for p, b in second] == [
        (partition_for(young, PARTITIONS), [young])
    ]


def test_partition_batcher_unsplit_chunks_reaching_max_trades_are_split_at_once() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=4, linger_s=60.0)
    partition = partition_for("AAPL", PARTITIONS)

    # Act
    ready = [batcher.add(_chunk(("AAPL",), [0], k), now_s=T0_S + k) for k in range(4)]

    # Assert: the fourth trade fills the partition, and nothing is left behind
    assert ready[:3] == [[], [], []]
    [(p, batch)] = ready[3]
    assert p == partition
    assert batch.trade_id == ("id0", "id1", "id2", "id3")
    assert batcher.drain() == []


def test_partition_rows_matches_a_stable_sort_by_partition() -> None:
    # Arrange
    rng = np.random.default_rng(7)
    dictionary = 40
    symbol_partition = rng.integers(0, 6, dictionary).astype(np.int32)
    instrument_index = rng.integers(0, dictionary, 5_000).astype(np.int32)

    # Act
    order, bounds, part_index, part_symbols, symbol_bounds = partition_rows(
        instrument_index=instrument_index, symbol_partition=symbol_partition, partitions=6
    )

    # Assert
    trade_partition = symbol_partition[instrument_index]
    expected = np.argsort(trade_partition, kind="stable")
    assert order.tolist() == expected.tolist()
    assert bounds.tolist() == np.searchsorted(trade_partition[expected], np.arange(7)).tolist()
    for p in range(6):
        rows = order[bounds[p] : bounds[p + 1]]
        mine = part_symbols[symbol_bounds[p] : symbol_bounds[p + 1]]
        assert list(mine) == list(dict.fromkeys(instrument_index[rows].tolist()))
        part = part_index[bounds[p] : bounds[p + 1]]
        assert mine[part].tolist() == instrument_index[rows].tolist()
