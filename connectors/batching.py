"""Group trades into one TradeBatch per Kafka partition, flushed by size or by age.

Batches are formed per partition so they stay large even with thousands of instruments, and
trades keep their arrival order within a partition, so each instrument's order is kept. A
chunk's dictionary may name a whole universe of instruments; each partition's part keeps only
the symbols its trades use, so the cost of a chunk follows its trades, not its dictionary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from shared.models import TradeBatch
from shared.partitioning import partition_for


@dataclass(slots=True)
class _Pending:
    chunks: list[TradeBatch] = field(default_factory=list)
    count: int = 0
    since_s: float = 0.0


def _merge(chunks: list[TradeBatch]) -> TradeBatch:
    """Concatenate compact chunks (every symbol used) into one batch, itself compact."""
    names: dict[str, int] = {}
    remapped = []
    for chunk in chunks:
        local = np.array(
            [names.setdefault(s, len(names)) for s in chunk.instruments], dtype=np.int32
        )
        remapped.append(local[chunk.instrument_index])
    has_side = any(c.side is not None for c in chunks)
    has_id = any(c.trade_id is not None for c in chunks)
    return TradeBatch(
        source=chunks[0].source,
        instruments=tuple(names),
        instrument_index=np.concatenate(remapped),
        ts_event_us=np.concatenate([c.ts_event_us for c in chunks]),
        ts_recv_us=np.concatenate([c.ts_recv_us for c in chunks]),
        price=np.concatenate([c.price for c in chunks]),
        size=np.concatenate([c.size for c in chunks]),
        side=np.concatenate(
            [c.side if c.side is not None else np.zeros(len(c), np.int8) for c in chunks]
        )
        if has_side
        else None,
        trade_id=tuple(t for c in chunks for t in (c.trade_id or ("",) * len(c)))
        if has_id
        else None,
        watermark_us=max(c.watermark_us for c in chunks),
        provider=chunks[0].provider,
    )


def _select(
    chunk: TradeBatch,
    rows: NDArray[np.intp],
    instruments: tuple[str, ...],
    instrument_index: NDArray[np.int32],
) -> TradeBatch:
    """Return the trades `rows` of `chunk`, with the dictionary and indexes given for them."""
    return TradeBatch(
        source=chunk.source,
        instruments=instruments,
        instrument_index=instrument_index,
        ts_event_us=chunk.ts_event_us[rows],
        ts_recv_us=chunk.ts_recv_us[rows],
        price=chunk.price[rows],
        size=chunk.size[rows],
        side=chunk.side[rows] if chunk.side is not None else None,
        trade_id=tuple(chunk.trade_id[i] for i in rows.tolist())
        if chunk.trade_id is not None
        else None,
        watermark_us=chunk.watermark_us,
        provider=chunk.provider,
    )


def take_rows(batch: TradeBatch, rows: NDArray[np.intp]) -> TradeBatch:
    """Return the trades `rows` of `batch`, keeping its dictionary."""
    return _select(batch, rows, batch.instruments, batch.instrument_index[rows])


class PartitionBatcher:
    """Accumulate trade chunks per partition; hand back batches that are full or old enough."""

    def __init__(self, partitions: int, max_trades: int, linger_s: float) -> None:
        self.partitions = partitions
        self.max_trades = max_trades
        self.linger_s = linger_s
        self._pending = [_Pending() for _ in range(partitions)]
        self._partition_of: dict[str, int] = {}

    def add(self, chunk: TradeBatch) -> list[tuple[int, TradeBatch]]:
        """Split `chunk` by partition and return the (partition, batch) pairs now full."""
        if len(chunk) == 0:
            return []
        used = np.flatnonzero(np.bincount(chunk.instrument_index, minlength=len(chunk.instruments)))
        compact = np.empty(len(chunk.instruments), dtype=np.int32)
        compact[used] = np.arange(len(used), dtype=np.int32)
        local = compact[chunk.instrument_index]  # each trade's symbol among those used
        names = [chunk.instruments[i] for i in used.tolist()]
        symbol_partition = np.array([self._partition(s) for s in names], dtype=np.int32)
        trade_partition = symbol_partition[local]
        order = np.argsort(trade_partition, kind="stable")
        bounds = np.searchsorted(trade_partition[order], np.arange(self.partitions + 1))
        position = np.empty(len(names), dtype=np.int32)  # a symbol's index in its part
        now = time.monotonic()
        ready = []
        for p in range(self.partitions):
            lo, hi = bounds[p], bounds[p + 1]
            if lo == hi:
                continue
            if hi - lo == len(chunk) and len(names) == len(chunk.instruments):
                part = chunk  # one partition, every symbol used: already compact
            else:
                mine = np.flatnonzero(symbol_partition == p)
                position[mine] = np.arange(len(mine), dtype=np.int32)
                rows = order[lo:hi]
                part = _select(
                    chunk, rows, tuple(names[i] for i in mine.tolist()), position[local[rows]]
                )
            if self._pending[p].chunks and self._pending[p].chunks[0].provider != part.provider:
                ready.append((p, self._take(p)))  # a batch names one provider
            pending = self._pending[p]
            if not pending.chunks:
                pending.since_s = now
            pending.chunks.append(part)
            pending.count += len(part)
            if pending.count >= self.max_trades:
                ready.append((p, self._take(p)))
        return ready

    def due(self, now_s: float | None = None) -> list[tuple[int, TradeBatch]]:
        """Return the batches that have waited at least the linger time."""
        now = time.monotonic() if now_s is None else now_s
        return [
            (p, self._take(p))
            for p, pending in enumerate(self._pending)
            if pending.chunks and now - pending.since_s >= self.linger_s
        ]

    def drain(self) -> list[tuple[int, TradeBatch]]:
        """Return every pending batch, for shutdown."""
        return [(p, self._take(p)) for p, pending in enumerate(self._pending) if pending.chunks]

    def _partition(self, symbol: str) -> int:
        partition = self._partition_of.get(symbol)
        if partition is None:
            partition = self._partition_of[symbol] = partition_for(symbol, self.partitions)
        return partition

    def _take(self, partition: int) -> TradeBatch:
        pending = self._pending[partition]
        chunks = pending.chunks
        self._pending[partition] = _Pending()
        return chunks[0] if len(chunks) == 1 else _merge(chunks)
