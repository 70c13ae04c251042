"""Group trades into one TradeBatch per Kafka partition, flushed by size or by age.

Batches are formed per partition so they stay large even with thousands of instruments, and
trades keep their arrival order within a partition, so each instrument's order is kept.
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
    """Concatenate chunks into one batch whose dictionary holds only the symbols used."""
    names: dict[str, int] = {}
    remapped = []
    for chunk in chunks:
        local = np.array(
            [names.setdefault(s, len(names)) for s in chunk.instruments], dtype=np.int32
        )
        remapped.append(
            local[chunk.instrument_index] if len(chunk.instruments) else chunk.instrument_index
        )
    index = np.concatenate(remapped)
    used, compact = np.unique(index, return_inverse=True)
    all_names = tuple(names)
    has_side = any(c.side is not None for c in chunks)
    has_id = any(c.trade_id is not None for c in chunks)
    return TradeBatch(
        source=chunks[0].source,
        instruments=tuple(all_names[i] for i in used.tolist()),
        instrument_index=compact.astype(np.int32),
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
    )


def _select(chunk: TradeBatch, rows: NDArray[np.intp]) -> TradeBatch:
    return TradeBatch(
        source=chunk.source,
        instruments=chunk.instruments,
        instrument_index=chunk.instrument_index[rows],
        ts_event_us=chunk.ts_event_us[rows],
        ts_recv_us=chunk.ts_recv_us[rows],
        price=chunk.price[rows],
        size=chunk.size[rows],
        side=chunk.side[rows] if chunk.side is not None else None,
        trade_id=tuple(chunk.trade_id[i] for i in rows.tolist())
        if chunk.trade_id is not None
        else None,
        watermark_us=chunk.watermark_us,
    )


class PartitionBatcher:
    """Accumulate trade chunks per partition; hand back batches that are full or old enough."""

    def __init__(self, partitions: int, max_trades: int, linger_s: float) -> None:
        self.partitions = partitions
        self.max_trades = max_trades
        self.linger_s = linger_s
        self._pending = [_Pending() for _ in range(partitions)]

    def add(self, chunk: TradeBatch) -> list[tuple[int, TradeBatch]]:
        """Split `chunk` by partition and return the (partition, batch) pairs now full."""
        if len(chunk) == 0:
            return []
        symbol_partition = np.array(
            [partition_for(s, self.partitions) for s in chunk.instruments], dtype=np.int32
        )
        trade_partition = symbol_partition[chunk.instrument_index]
        order = np.argsort(trade_partition, kind="stable")
        bounds = np.searchsorted(trade_partition[order], np.arange(self.partitions + 1))
        now = time.monotonic()
        ready = []
        for p in range(self.partitions):
            lo, hi = bounds[p], bounds[p + 1]
            if lo == hi:
                continue
            part = chunk if hi - lo == len(chunk) else _select(chunk, order[lo:hi])
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

    def _take(self, partition: int) -> TradeBatch:
        pending = self._pending[partition]
        chunks = pending.chunks
        self._pending[partition] = _Pending()
        return chunks[0] if len(chunks) == 1 and _is_compact(chunks[0]) else _merge(chunks)


def _is_compact(batch: TradeBatch) -> bool:
    return len(np.unique(batch.instrument_index)) == len(batch.instruments)
