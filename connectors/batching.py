"""Group trades into one TradeBatch per Kafka partition, flushed by size or by age.

Batches are formed per partition so they stay large even with thousands of instruments, and
trades keep their arrival order within a partition, so each instrument's order is kept. A
chunk's dictionary may name a whole universe of instruments; each partition's part keeps only
the symbols its trades use, so the cost of a chunk follows its trades, not its dictionary.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from connectors.batching_kernels import partition_rows
from shared.models import TradeBatch
from shared.partitioning import partition_for


@dataclass(slots=True)
class _Pending:
    chunks: list[TradeBatch] = field(default_factory=list)
    count: int = 0
    since_s: float = 0.0


def _merge(chunks: list[TradeBatch]) -> TradeBatch:
    """Concatenate chunks of one provider into one batch. Its dictionary is theirs if they
    share one, else the union of theirs (compact if theirs are: every symbol used)."""
    first = chunks[0].instruments
    lengths = [len(c.price) for c in chunks]
    local = np.concatenate([c.instrument_index for c in chunks])
    if all(c.instruments is first for c in chunks):
        instruments, instrument_index = first, local
    else:
        listed = list(itertools.chain.from_iterable(c.instruments for c in chunks))
        instruments = tuple(dict.fromkeys(listed))
        position = {s: i for i, s in enumerate(instruments)}
        codes = np.fromiter(map(position.__getitem__, listed), dtype=np.int32, count=len(listed))
        first_code = np.cumsum([0] + [len(c.instruments) for c in chunks[:-1]])
        instrument_index = codes[local + np.repeat(first_code, lengths)]
    has_side = any(c.side is not None for c in chunks)
    has_id = any(c.trade_id is not None for c in chunks)
    return TradeBatch(
        source=chunks[0].source,
        instruments=instruments,
        instrument_index=instrument_index,
        ts_event_us=np.concatenate([c.ts_event_us for c in chunks]),
        ts_recv_us=np.concatenate([c.ts_recv_us for c in chunks]),
        price=np.concatenate([c.price for c in chunks]),
        size=np.concatenate([c.size for c in chunks]),
        side=np.concatenate(
            [
                c.side if c.side is not None else np.zeros(n, np.int8)
                for c, n in zip(chunks, lengths, strict=True)
            ]
        )
        if has_side
        else None,
        trade_id=tuple(
            itertools.chain.from_iterable(
                c.trade_id or ("",) * n for c, n in zip(chunks, lengths, strict=True)
            )
        )
        if has_id
        else None,
        watermark_us=max(c.watermark_us for c in chunks),
        provider=chunks[0].provider,
    )


def _compacted(chunk: TradeBatch) -> TradeBatch:
    """`chunk` with its dictionary cut to the symbols its trades use."""
    used, local = np.unique(chunk.instrument_index, return_inverse=True)
    return dataclasses.replace(
        chunk,
        instruments=tuple(chunk.instruments[i] for i in used.tolist()),
        instrument_index=local.astype(np.int32),
    )


def _concatenate(chunks: list[TradeBatch]) -> TradeBatch:
    """Concatenate chunks of one provider; a chunk whose dictionary is larger than its trades
    (a universe) is cut to its symbols first, unless all share it, so the cost follows trades."""
    first = chunks[0].instruments
    if all(c.instruments is first for c in chunks):
        return _merge(chunks)
    return _merge([_compacted(c) if len(c.instruments) > len(c) else c for c in chunks])


def _strings_at(values: tuple[str, ...], rows: NDArray[np.intp]) -> tuple[str, ...]:
    """values[rows], as a tuple."""
    if len(rows) == 1:
        return (values[int(rows[0])],)
    taken: tuple[str, ...] = operator.itemgetter(*rows.tolist())(values) if len(rows) else ()
    return taken


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
        trade_id=_strings_at(chunk.trade_id, rows) if chunk.trade_id is not None else None,
        watermark_us=chunk.watermark_us,
        provider=chunk.provider,
    )


def _slice(batch: TradeBatch, lo: int, hi: int, instruments: tuple[str, ...]) -> TradeBatch:
    """Trades lo to hi of `batch` (views of its columns), with the dictionary given for them."""
    return TradeBatch(
        source=batch.source,
        instruments=instruments,
        instrument_index=batch.instrument_index[lo:hi],
        ts_event_us=batch.ts_event_us[lo:hi],
        ts_recv_us=batch.ts_recv_us[lo:hi],
        price=batch.price[lo:hi],
        size=batch.size[lo:hi],
        side=batch.side[lo:hi] if batch.side is not None else None,
        trade_id=batch.trade_id[lo:hi] if batch.trade_id is not None else None,
        watermark_us=batch.watermark_us,
        provider=batch.provider,
    )


def take_rows(batch: TradeBatch, rows: NDArray[np.intp]) -> TradeBatch:
    """Return the trades `rows` of `batch`, keeping its dictionary."""
    return _select(batch, rows, batch.instruments, batch.instrument_index[rows])


class PartitionBatcher:
    """Accumulate trade chunks per partition; hand back batches that are full or old enough.

    A chunk is split by partition only when it has to be: when a partition could now be full,
    when the oldest chunk not yet split is due, on `drain`, or before a chunk of another
    provider. Chunks that came in between are split together, so a feed of many small frames
    pays the split's per-call cost about once per linger rather than once per frame; each trade
    still counts as waiting from when its own chunk came.
    """

    def __init__(self, partitions: int, max_trades: int, linger_s: float) -> None:
        self.partitions = partitions
        self.max_trades = max_trades
        self.linger_s = linger_s
        self._pending = [_Pending() for _ in range(partitions)]
        self._partition_of: dict[str, int] = {}
        self._unsplit: list[TradeBatch] = []  # chunks not yet split, of one provider
        self._unsplit_since_s: list[float] = []  # when each came
        self._unsplit_count = 0
        self._fullest = 0  # the most trades a partition holds pending
        # compiled (or loaded from numba's cache) now, not on a first split mid-stream
        partition_rows(
            instrument_index=np.zeros(0, np.int32),
            symbol_partition=np.zeros(0, np.int32),
            partitions=partitions,
        )

    def add(self, chunk: TradeBatch, now_s: float | None = None) -> list[tuple[int, TradeBatch]]:
        """Take `chunk` (come at `now_s`, default now); return the (partition, batch) pairs
        now full."""
        if len(chunk) == 0:
            return []
        ready = []
        if self._unsplit and self._unsplit[0].provider != chunk.provider:
            ready += self._split()  # a batch names one provider
        self._unsplit.append(chunk)
        self._unsplit_since_s.append(time.monotonic() if now_s is None else now_s)
        self._unsplit_count += len(chunk)
        if self._unsplit_count + self._fullest >= self.max_trades:
            ready += self._split()
        return ready

    def due(self, now_s: float | None = None) -> list[tuple[int, TradeBatch]]:
        """Return the batches that have waited at least the linger time."""
        now = time.monotonic() if now_s is None else now_s
        ready = []
        if self._unsplit and now - self._unsplit_since_s[0] >= self.linger_s:
            ready += self._split()  # the oldest chunk not yet split is due
        ready += [
            (p, self._take(p))
            for p, pending in enumerate(self._pending)
            if pending.chunks and now - pending.since_s >= self.linger_s
        ]
        self._fullest = max(pending.count for pending in self._pending)
        return ready

    def drain(self) -> list[tuple[int, TradeBatch]]:
        """Return every pending batch, for shutdown."""
        ready = self._split()
        ready += [(p, self._take(p)) for p, pending in enumerate(self._pending) if pending.chunks]
        self._fullest = 0
        return ready

    def _split(self) -> list[tuple[int, TradeBatch]]:
        """Split the chunks not yet split by partition; return the (partition, batch) pairs
        now full."""
        if not self._unsplit:
            return []
        chunks, since_s = self._unsplit, self._unsplit_since_s
        self._unsplit, self._unsplit_since_s, self._unsplit_count = [], [], 0
        chunk = chunks[0] if len(chunks) == 1 else _concatenate(chunks)
        instruments = chunk.instruments
        used = np.flatnonzero(np.bincount(chunk.instrument_index, minlength=len(instruments)))
        symbol_partition = np.zeros(len(instruments), dtype=np.int32)
        symbol_partition[used] = [self._partition(instruments[i]) for i in used.tolist()]
        order, bounds, part_index, part_symbols, symbol_bounds = partition_rows(
            instrument_index=chunk.instrument_index,
            symbol_partition=symbol_partition,
            partitions=self.partitions,
        )
        rows, symbols, names = bounds.tolist(), symbol_bounds.tolist(), part_symbols.tolist()
        # the chunk of each partition's first trade: it has waited since that chunk came
        lengths = [len(c.price) for c in chunks]
        starts = np.cumsum(lengths) - lengths
        first_rows = order[np.minimum(bounds[:-1], len(chunk) - 1)]
        first_chunk = (np.searchsorted(starts, first_rows, "right") - 1).tolist()
        whole = len(used) == len(instruments) and int(np.diff(bounds).max()) == len(chunk)
        if not whole:  # the trades in partition order, each indexing its own part's symbols
            chunk = _select(chunk, order, instruments, part_index)
        ready = []
        for p in range(self.partitions):
            lo, hi = rows[p], rows[p + 1]
            if lo == hi:
                continue
            if whole:
                part = chunk  # one partition, every symbol used: already compact
            else:
                mine = names[symbols[p] : symbols[p + 1]]
                part = _slice(chunk, lo, hi, tuple([instruments[i] for i in mine]))
            if self._pending[p].chunks and self._pending[p].chunks[0].provider != part.provider:
                ready.append((p, self._take(p)))  # a batch names one provider
            pending = self._pending[p]
            if not pending.chunks:
                pending.since_s = since_s[first_chunk[p]]
            pending.chunks.append(part)
            pending.count += hi - lo
            if pending.count >= self.max_trades:
                ready.append((p, self._take(p)))
        self._fullest = max(pending.count for pending in self._pending)
        return ready

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
