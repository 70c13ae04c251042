"""PartitionBatcher: trades grouped per partition, in arrival order, flushed by size or age."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from connectors.batching import PartitionBatcher
from shared.codec import Codec
from shared.models import TradeBatch
from shared.partitioning import partition_for

PARTITIONS = 4
SYMBOLS = ("AAPL", "MSFT", "BRK.B", "BTC-USD", "ES=F", "^GSPC", "EUR/USD", "TSLA", "NVDA", "META")
BIG = 1_000_000


def _chunk(
    symbols: tuple[str, ...],
    index: list[int] | np.ndarray,
    first_seq: int = 0,
    side: bool = False,
    trade_id: bool = False,
    source: str = "test",
) -> TradeBatch:
    """A chunk whose trade i carries sequence number first_seq + i in ts_event and in size."""
    n = len(index)
    seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
    return TradeBatch(
        source=source,
        instruments=symbols,
        instrument_index=np.asarray(index, dtype=np.int32),
        ts_event_us=1_767_623_400_000_000 + seq,
        ts_recv_us=1_767_623_500_000_000 + seq,
        price=100.0 + seq / 100,
        size=seq.astype(np.float64) + 1,
        side=np.where(seq % 2 == 0, 1, -1).astype(np.int8) if side else None,
        trade_id=tuple(f"id{s}" for s in seq.tolist()) if trade_id else None,
    )


def _rows(batch: TradeBatch) -> list[tuple[object, ...]]:
    """Every trade of a batch as a comparable tuple, in batch order."""
    side = batch.side.tolist() if batch.side is not None else [None] * len(batch)
    trade_id = batch.trade_id if batch.trade_id is not None else (None,) * len(batch)
    return list(
        zip(
            batch.instrument_column(),
            batch.ts_event_us.tolist(),
            batch.ts_recv_us.tolist(),
            batch.price.tolist(),
            batch.size.tolist(),
            side,
            trade_id,
            strict=True,
        )
    )


def _random_chunks(
    seed: int, count: int, with_side: bool = False, with_id: bool = False
) -> list[TradeBatch]:
    rng = np.random.default_rng(seed)
    chunks, seq = [], 0
    for _ in range(count):
        n = int(rng.integers(1, 200))
        chunks.append(_chunk(SYMBOLS, rng.integers(0, len(SYMBOLS), n), seq, with_side, with_id))
        seq += n
    return chunks


def test_partition_batcher_symbols_used_span_several_partitions() -> None:
    # Arrange / Act
    partitions = {partition_for(s, PARTITIONS) for s in SYMBOLS}

    # Assert: the other tests rely on it
    assert len(partitions) >= 3


def test_partition_batcher_add_trades_land_on_partition_of_their_symbol() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)
    for chunk in _random_chunks(1, 5):
        batcher.add(chunk)

    # Act
    batches = batcher.drain()

    # Assert
    assert batches
    for partition, batch in batches:
        assert {partition_for(s, PARTITIONS) for s in batch.instrument_column()} == {partition}


def test_partition_batcher_several_chunks_keep_arrival_order_per_partition() -> None:
    # Arrange
    chunks = _random_chunks(2, 8, with_side=True, with_id=True)
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)
    for chunk in chunks:
        batcher.add(chunk)
    arrived = [row for chunk in chunks for row in _rows(chunk)]

    # Act
    batches = dict(batcher.drain())

    # Assert
    for partition in range(PARTITIONS):
        expected = [r for r in arrived if partition_for(str(r[0]), PARTITIONS) == partition]
        actual = _rows(batches[partition]) if partition in batches else []
        assert actual == expected, f"partition {partition}"


def test_partition_batcher_several_chunks_keep_order_per_instrument() -> None:
    # Arrange
    chunks = _random_chunks(3, 10)
    batcher = PartitionBatcher(PARTITIONS, max_trades=150, linger_s=60)
    out: list[TradeBatch] = []

    # Act
    for chunk in chunks:
        out += [b for _, b in batcher.add(chunk)]
    out += [b for _, b in batcher.drain()]

    # Assert
    for symbol in SYMBOLS:
        sequence = [
            int(ts)
            for b in out
            for s, ts in zip(b.instrument_column(), b.ts_event_us.tolist(), strict=True)
            if s == symbol
        ]
        expected = [
            int(ts)
            for c in chunks
            for s, ts in zip(c.instrument_column(), c.ts_event_us.tolist(), strict=True)
            if s == symbol
        ]
        assert sequence == expected, symbol


def test_partition_batcher_max_trades_reached_returns_ready_batch() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=5, linger_s=60)
    partition = partition_for("AAPL", PARTITIONS)
    first = batcher.add(_chunk(("AAPL",), [0, 0, 0], 0))

    # Act
    ready = batcher.add(_chunk(("AAPL",), [0, 0], 3))

    # Assert
    assert first == []
    assert [p for p, _ in ready] == [partition]
    assert ready[0][1].ts_event_us.tolist() == [1_767_623_400_000_000 + i for i in range(5)]
    assert batcher.drain() == []


def test_partition_batcher_below_max_trades_returns_nothing_until_drained() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=5, linger_s=60)

    # Act
    ready = [batcher.add(_chunk(("AAPL", "MSFT"), [0, 1], 2 * i)) for i in range(4)]

    # Assert
    assert ready == [[], [], [], []]
    assert sum(len(b) for _, b in batcher.drain()) == 8


def test_partition_batcher_chunk_over_max_trades_returns_it_whole() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=3, linger_s=60)

    # Act
    ready = batcher.add(_chunk(("AAPL",), [0] * 10))

    # Assert
    assert len(ready) == 1
    assert len(ready[0][1]) == 10


def test_partition_batcher_due_before_linger_returns_nothing() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=10.0)
    before = time.monotonic()
    batcher.add(_chunk(SYMBOLS, list(range(len(SYMBOLS)))))

    # Act
    due = batcher.due(now_s=before + 9.0)

    # Assert
    assert due == []
    assert sum(len(b) for _, b in batcher.drain()) == len(SYMBOLS)


def test_partition_batcher_due_after_linger_returns_pending_batches() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=10.0)
    chunk = _chunk(SYMBOLS, list(range(len(SYMBOLS))))
    batcher.add(chunk)
    after = time.monotonic()

    # Act
    due = batcher.due(now_s=after + 10.0)

    # Assert
    assert sorted(p for p, _ in due) == sorted({partition_for(s, PARTITIONS) for s in SYMBOLS})
    assert sum(len(b) for _, b in due) == len(chunk)
    assert batcher.due(now_s=after + 1000.0) == []
    assert batcher.drain() == []


def test_partition_batcher_due_zero_linger_returns_everything() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=0.0)
    batcher.add(_chunk(("AAPL", "MSFT"), [0, 1, 0]))

    # Act
    due = batcher.due(now_s=time.monotonic())

    # Assert
    assert sum(len(b) for _, b in due) == 3


def test_partition_batcher_drain_returns_every_trade_once() -> None:
    # Arrange
    chunks = _random_chunks(4, 6)
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)
    for chunk in chunks:
        batcher.add(chunk)

    # Act
    drained = batcher.drain()

    # Assert
    assert len({p for p, _ in drained}) == len(drained)
    assert sorted(r for _, b in drained for r in _rows(b)) == sorted(
        r for c in chunks for r in _rows(c)
    )
    assert batcher.drain() == []


def test_partition_batcher_empty_chunk_returns_nothing_and_keeps_nothing() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=1, linger_s=0.0)

    # Act
    ready = batcher.add(_chunk(SYMBOLS, []))

    # Assert
    assert ready == []
    assert batcher.drain() == []


def test_partition_batcher_merged_batch_dictionary_holds_only_used_symbols(codec: Codec) -> None:
    # Arrange: every chunk carries the full dictionary, as the simulator's do
    chunks = _random_chunks(5, 4)
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)
    for chunk in chunks:
        batcher.add(chunk)

    # Act
    drained = batcher.drain()

    # Assert
    for _, batch in drained:
        used = set(batch.instrument_column())
        assert len(batch.instruments) == len(used)
        assert set(batch.instruments) == used
        assert batch.instrument_index.dtype == np.int32
        decoded = codec.decode_trade_batch(codec.encode_trade_batch(batch))
        assert _rows(decoded) == _rows(batch)


def test_partition_batcher_single_chunk_sparse_dictionary_is_compacted() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)
    batcher.add(_chunk(SYMBOLS, [0, 0, 0]))  # one partition, nine unused symbols

    # Act
    [(partition, batch)] = batcher.drain()

    # Assert
    assert partition == partition_for(SYMBOLS[0], PARTITIONS)
    assert batch.instruments == (SYMBOLS[0],)
    assert batch.instrument_index.tolist() == [0, 0, 0]


def test_partition_batcher_one_chunk_over_several_partitions_each_part_names_its_own() -> None:
    # Arrange: a few trades, a dictionary of every symbol
    chunk = _chunk(SYMBOLS, [0, 3, 5, 0, 7, 3])
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)

    # Act
    batcher.add(chunk)
    drained = batcher.drain()

    # Assert: each part holds only the symbols its trades use, all of its own partition
    for partition, batch in drained:
        assert set(batch.instruments) == set(batch.instrument_column())
        assert {partition_for(s, PARTITIONS) for s in batch.instruments} == {partition}
    rows = sorted(row for _, batch in drained for row in _rows(batch))
    assert rows == sorted(_rows(chunk))


def test_partition_batcher_chunks_with_different_dictionaries_merge_by_symbol() -> None:
    # Arrange: the same symbols at different positions in each chunk's dictionary
    batcher = PartitionBatcher(1, max_trades=BIG, linger_s=60)
    first = _chunk(("AAPL", "MSFT"), [0, 1, 0], 0)
    second = _chunk(("TSLA", "MSFT", "AAPL"), [2, 1, 0], 3)

    # Act
    batcher.add(first)
    batcher.add(second)
    [(_, batch)] = batcher.drain()

    # Assert
    assert batch.instrument_column() == ["AAPL", "MSFT", "AAPL", "AAPL", "MSFT", "TSLA"]
    assert sorted(batch.instruments) == ["AAPL", "MSFT", "TSLA"]


@pytest.mark.parametrize(
    ("side_first", "id_first"), [(False, False), (True, True), (False, True), (True, False)]
)
def test_partition_batcher_mixed_side_and_trade_id_chunks_fill_gaps(
    side_first: bool, id_first: bool
) -> None:
    # Arrange: only one of the two chunks has each optional column
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)
    batcher.add(_chunk(("AAPL",), [0, 0], 0, side=side_first, trade_id=id_first))
    batcher.add(_chunk(("AAPL",), [0, 0], 2, side=not side_first, trade_id=not id_first))

    # Act
    [(_, batch)] = batcher.drain()

    # Assert
    expected_side = [1, -1, 0, 0] if side_first else [0, 0, 1, -1]
    expected_id = ("id0", "id1", "", "") if id_first else ("", "", "id2", "id3")
    assert batch.side is not None
    assert batch.side.dtype == np.int8
    assert batch.side.tolist() == expected_side
    assert batch.trade_id == expected_id


def test_partition_batcher_chunks_without_side_or_trade_id_keep_them_none() -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)
    batcher.add(_chunk(("AAPL",), [0, 0], 0))
    batcher.add(_chunk(("AAPL", "NVDA"), [1, 0], 2))

    # Act
    batches = batcher.drain()

    # Assert
    assert batches
    assert all(b.side is None and b.trade_id is None for _, b in batches)


def test_partition_batcher_mixed_chunks_merged_batch_round_trips_through_codec(
    codec: Codec,
) -> None:
    # Arrange
    batcher = PartitionBatcher(PARTITIONS, max_trades=BIG, linger_s=60)
    chunks = [*_random_chunks(6, 3), *_random_chunks(7, 3, with_side=True, with_id=True)]
    for chunk in chunks:
        batcher.add(chunk)

    # Act
    drained = batcher.drain()

    # Assert
    assert sum(len(b) for _, b in drained) == sum(len(c) for c in chunks)
    for _, batch in drained:
        decoded = codec.decode_trade_batch(codec.encode_trade_batch(batch))
        assert _rows(decoded) == _rows(batch)


def test_partition_batcher_chunks_of_two_providers_never_share_a_batch() -> None:
    # Arrange: a failover feed's chunks, finnhub then alpaca, into one partition
    batcher = PartitionBatcher(1, max_trades=BIG, linger_s=60)
    first = dataclasses.replace(_chunk(SYMBOLS, [0, 1]), provider="finnhub")
    second = dataclasses.replace(_chunk(SYMBOLS, [2, 3]), provider="alpaca")

    # Act
    ready = batcher.add(first) + batcher.add(second)
    drained = batcher.drain()

    # Assert: the first batch left when the other provider's chunk came, in arrival order
    assert [(p, b.provider, len(b)) for p, b in ready + drained] == [
        (0, "finnhub", 2),
        (0, "alpaca", 2),
    ]
