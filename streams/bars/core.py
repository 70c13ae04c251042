"""The bar book of one Kafka partition: fold trade batches into bars, snapshot and restore.

Everything a bar depends on is in the partition's log (trades and the sources' watermarks), and
a message is folded and closed as a unit, so reprocessing the same messages from a snapshot
emits the same bars with the same revisions: that is what makes the agent crash-safe.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from streams.bars import kernels as k
from streams.bars.intervals import parse_intervals
from streams.errors import ConfigError
from streams.models import BAR_DOUBLES, Bar, BarBatch, TradeBatch


@dataclass(frozen=True)
class BarsConfig:
    """Intervals, grace and maximum lateness, and the ring layout they imply."""

    intervals: tuple[tuple[str, int], ...]
    grace_us: int
    max_lateness_us: int

    @classmethod
    def parse(cls, intervals: str, grace_s: float, max_lateness_s: float) -> BarsConfig:
        """Build from settings; raise ConfigError naming the variable that is wrong."""
        if not 0 <= grace_s <= max_lateness_s:
            raise ConfigError(
                f"MS_BARS_GRACE_S={grace_s} must be between 0 and MS_BARS_MAX_LATENESS_S={max_lateness_s}"
            )
        return cls(parse_intervals(intervals), round(grace_s * 1e6), round(max_lateness_s * 1e6))

    @property
    def lengths_us(self) -> NDArray[np.int64]:
        return np.array([length for _, length in self.intervals], dtype=np.int64)

    @property
    def ring_sizes(self) -> NDArray[np.int64]:
        """Slots per interval: every window from watermark - max_lateness to the watermark."""
        return np.array(
            [math.ceil(self.max_lateness_us / n) + 2 for _, n in self.intervals], dtype=np.int64
        )

    @property
    def ring_offsets(self) -> NDArray[np.int64]:
        return np.concatenate([[0], np.cumsum(self.ring_sizes)[:-1]]).astype(np.int64)

    @property
    def slots_per_instrument(self) -> int:
        return int(self.ring_sizes.sum())

    def fingerprint(self) -> str:
        """Identify the layout, so that a snapshot is only restored into the same layout."""
        text = orjson.dumps([self.intervals, self.grace_us, self.max_lateness_us])
        return hashlib.sha256(text).hexdigest()[:16]


def encode_snapshot(arrays: dict[str, NDArray[Any]]) -> bytes:
    """Compress `BarBook.snapshot_arrays()`; zlib releases the GIL, so this may run in a thread."""
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class LateTrade:
    """A trade older than its source's latest trade in the partition minus the maximum lateness."""

    instrument: str
    ts_event_us: int
    price: float
    size: float
    watermark_us: int


@dataclass(frozen=True, slots=True)
class FoldResult:
    emitted: BarBatch
    too_late: list[LateTrade]

    @property
    def bars(self) -> list[Bar]:
        return self.emitted.bars()


class FoldScratch:
    """The rows the kernels write emitted bars into during a fold, sized for the worst case.

    The worst case (every slot of every instrument, and a window per trade and interval) is
    tens of megabytes for a busy partition, while a fold emits a few hundred bars that are
    copied out before it returns. Folds never overlap, so the books of a worker share one.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.slot = np.empty(0, np.int64)
        self.f = np.empty((0, k.N_FLOAT))
        self.i = np.empty((0, k.N_INT), np.int64)

    def ensure(self, rows: int) -> None:
        if rows > self.rows:
            self.rows = max(rows, 2 * self.rows)
            self.slot = np.empty(self.rows, np.int64)
            self.f = np.empty((self.rows, k.N_FLOAT))
            self.i = np.empty((self.rows, k.N_INT), np.int64)


class BarBook:
    """All bar state of one partition, as numpy arrays folded by the kernels."""

    def __init__(
        self, config: BarsConfig, capacity: int = 16, scratch: FoldScratch | None = None
    ) -> None:
        self.config = config
        self.names: list[str] = []
        self.rows: dict[str, int] = {}
        self.sources: list[str] = []
        self.source_ids: dict[str, int] = {}
        # Per source: the latest trade time, which decides lateness (a function of this
        # partition's trades alone, however they were batched) and the watermark, which also
        # takes the sources' clocks and decides when windows close.
        self.latest_trade_us = np.zeros(0, dtype=np.int64)
        self.watermarks = np.zeros(0, dtype=np.int64)
        self._lengths = config.lengths_us
        self._ring_sizes = config.ring_sizes
        self._ring_offsets = config.ring_offsets
        self._per = config.slots_per_instrument
        self._slot_interval = np.repeat(np.arange(len(config.intervals)), self._ring_sizes)
        self._interval_names = [name for name, _ in config.intervals]
        self.fstate: NDArray[np.float64] = np.zeros((0, k.N_FLOAT))
        self.istate: NDArray[np.int64] = np.zeros((0, k.N_INT), np.int64)
        self.state: NDArray[np.int8] = np.zeros(0, np.int8)
        self.channel_seq: NDArray[np.int64] = np.zeros((0, len(config.intervals)), np.int64)
        self.capacity = 0
        self._allocate(capacity)
        self._scratch = scratch or FoldScratch()

    def _allocate(self, capacity: int) -> None:
        """Size the state for `capacity` instruments, keeping the rows of known instruments."""
        n = capacity * self._per
        fstate = np.zeros((n, k.N_FLOAT))
        istate = np.zeros((n, k.N_INT), np.int64)
        state = np.zeros(n, np.int8)
        used = len(self.names) * self._per
        fstate[:used], istate[:used], state[:used] = (
            self.fstate[:used],
            self.istate[:used],
            self.state[:used],
        )
        channel_seq = np.zeros((capacity, len(self.config.intervals)), np.int64)
        channel_seq[: len(self.names)] = self.channel_seq[: len(self.names)]
        self.fstate, self.istate, self.state, self.channel_seq = fstate, istate, state, channel_seq
        # a cache of the kernel's, not state: slot -1 means nothing remembered yet
        self.window_start = np.zeros((capacity, len(self.config.intervals)), np.int64)
        self.window_slot = np.full((capacity, len(self.config.intervals)), -1, np.int64)
        self.capacity = capacity

    def _row_of(self, name: str) -> int:
        row = self.rows.get(name)
        if row is None:
            row = len(self.names)
            if row >= self.capacity:
                self._allocate(2 * self.capacity)
            self.rows[name] = row
            self.names.append(name)
        return row

    def _source_of(self, name: str) -> int:
        source = self.source_ids.get(name)
        if source is None:
            source = self.source_ids[name] = len(self.sources)
            self.sources.append(name)
            never = np.int64(np.iinfo(np.int64).min // 2)
            self.latest_trade_us = np.append(self.latest_trade_us, never)
            self.watermarks = np.append(self.watermarks, never)
        return source

    def fold(self, batch: TradeBatch) -> FoldResult:
        """Fold one message's trades, advance its source's watermark, and emit what is due."""
        cfg = self.config
        source = self._source_of(batch.source)
        rows = np.array([self._row_of(name) for name in batch.instruments], dtype=np.int64)
        trade_rows = rows[batch.instrument_index] if len(batch) else np.empty(0, np.int64)
        side = batch.side if batch.side is not None else np.zeros(len(batch), np.int8)
        too_late = np.zeros(len(batch), dtype=np.bool_)
        out = self._scratch
        out.ensure(len(self.names) * self._per + len(batch) * len(cfg.intervals))
        n = k.fold_trades(
            trade_rows,
            batch.ts_event_us,
            batch.price,
            batch.size,
            side,
            source,
            self.watermarks,
            cfg.max_lateness_us,
            self._lengths,
            self._ring_offsets,
            self._ring_sizes,
            self._per,
            self.window_start,
            self.window_slot,
            self.fstate,
            self.istate,
            self.state,
            too_late,
            out.slot,
            out.f,
            out.i,
        )
        self.watermarks[source] = max(
            int(self.watermarks[source]), int(self.latest_trade_us[source]), batch.watermark_us
        )
        n = k.close_due(
            len(self.names),
            self.watermarks,
            cfg.grace_us,
            self._lengths,
            self._ring_offsets,
            self._ring_sizes,
            self._per,
            self.fstate,
            self.istate,
            self.state,
            out.slot,
            out.f,
            out.i,
            n,
        )
        return FoldResult(self._emitted(n), self._late(batch, too_late, source))

    def _emitted(self, n: int) -> BarBatch:
        row, interval, seq = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        k.number_bars(
            self._scratch.slot,
            n,
            self._per,
            self._slot_interval,
            self.channel_seq,
            row,
            interval,
            seq,
        )
        f, i = self._scratch.f[:n], self._scratch.i[:n]
        doubles = np.empty((n, len(BAR_DOUBLES)))
        doubles[:, :5] = f[:, [k.F_OPEN, k.F_HIGH, k.F_LOW, k.F_CLOSE, k.F_VOLUME]]
        doubles[:, 5] = f[:, k.F_PV] / f[:, k.F_VOLUME]
        doubles[:, 6:] = f[:, [k.F_BUY, k.F_SELL]]
        return BarBatch(
            instruments=self.names,
            intervals=self._interval_names,
            sources=self.sources,
            instrument_index=row,
            interval_index=interval,
            source_index=i[:, k.I_SOURCE].copy(),
            ts_us=i[:, k.I_START].copy(),
            revision=i[:, k.I_REVISION].copy(),
            trade_count=i[:, k.I_COUNT].copy(),
            ts_event_us=i[:, k.I_CLOSE_TS].copy(),
            seq=seq,
            doubles=doubles,
            ts_recv_us=time.time_ns() // 1000,
        )

    def _late(self, batch: TradeBatch, too_late: NDArray[np.bool_], source: int) -> list[LateTrade]:
        if not too_late.any():
            return []
        watermark = int(self.latest_trade_us[source])
        return [
            LateTrade(
                batch.instruments[batch.instrument_index[t]],
                int(batch.ts_event_us[t]),
                float(batch.price[t]),
                float(batch.size[t]),
                watermark,
            )
            for t in np.flatnonzero(too_late).tolist()
        ]

    def snapshot(self) -> bytes:
        """Serialise the book (compressed numpy arrays plus names) for a checkpoint."""
        return encode_snapshot(self.snapshot_arrays())

    def snapshot_arrays(self) -> dict[str, NDArray[Any]]:
        """Copy the occupied slots a checkpoint needs: cheap, so compressing can run in a thread."""
        used = len(self.names) * self._per
        occupied = np.flatnonzero(self.state[:used] != k.EMPTY)
        meta = {"names": self.names, "sources": self.sources, "layout": self.config.fingerprint()}
        return {
            "occupied": occupied,
            "fstate": self.fstate[occupied],
            "istate": self.istate[occupied],
            "state": self.state[occupied],
            "watermarks": self.watermarks.copy(),
            "latest_trade_us": self.latest_trade_us.copy(),
            "channel_seq": self.channel_seq[: len(self.names)].copy(),
            "meta": np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
        }

    @classmethod
    def restore(
        cls, config: BarsConfig, data: bytes, scratch: FoldScratch | None = None
    ) -> BarBook:
        """Rebuild a book from `snapshot()`; raise ValueError if it was taken with another layout."""
        with np.load(io.BytesIO(data)) as arrays:
            meta = orjson.loads(arrays["meta"].tobytes())
            if meta["layout"] != config.fingerprint():
                raise ValueError("snapshot taken with other intervals, grace or max lateness")
            book = cls(config, capacity=max(16, len(meta["names"])), scratch=scratch)
            # snapshots hold only the occupied slots; the first ones held every slot in use
            used = len(meta["names"]) * book._per
            occupied = arrays["occupied"] if "occupied" in arrays else np.arange(used)
            book.fstate[occupied], book.istate[occupied], book.state[occupied] = (
                arrays["fstate"],
                arrays["istate"],
                arrays["state"],
            )
            book.watermarks = arrays["watermarks"].copy()
            book.latest_trade_us = arrays["latest_trade_us"].copy()
            book.channel_seq[: len(meta["names"])] = arrays["channel_seq"]
        book.names = list(meta["names"])
        book.rows = {name: row for row, name in enumerate(book.names)}
        book.sources = list(meta["sources"])
        book.source_ids = {name: i for i, name in enumerate(book.sources)}
        return book
