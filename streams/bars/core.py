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
from typing import Any, Final

import numpy as np
import orjson
from numpy.typing import NDArray

from shared.bar_fields import BAR_DOUBLES
from shared.errors import ConfigError
from shared.intervals import parse_intervals
from shared.models import Bar, BarBatch, TradeBatch
from streams.bars import kernels as k

ChannelSeqs = dict[tuple[str, str], int]  # (instrument, interval) -> the channel's last seq


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
class SnapshotSummary:
    """What a snapshot of any layout tells without being restored."""

    instruments: list[str]
    seqs: ChannelSeqs  # empty from snapshots before they named their intervals
    open_windows: int  # windows holding trades not yet emitted in full


def summarize_snapshot(data: bytes, config: BarsConfig) -> SnapshotSummary:
    """Read a snapshot that may not be restorable (other intervals, grace or max lateness).

    Snapshots from before they named their intervals give their seqs where their layout is
    `config`'s (its intervals are theirs), none otherwise."""
    with np.load(io.BytesIO(data)) as arrays:
        meta = orjson.loads(arrays["meta"].tobytes())
        instruments = list(meta.get("instruments", meta.get("names")))
        intervals = meta.get("intervals")
        if intervals is None and meta.get("layout") == config.fingerprint():
            intervals = [name for name, _ in config.intervals]
        seqs = (
            {}
            if intervals is None
            else _channel_seqs(instruments, intervals, arrays["channel_seq"])
        )
        state = arrays["state"]
        unfinished = int(np.count_nonzero((state == k.OPEN) | (state == k.DIRTY)))
    return SnapshotSummary(instruments, seqs, unfinished)


def _channel_seqs(
    instruments: list[str], intervals: list[str], channel_seq: NDArray[np.int64]
) -> ChannelSeqs:
    rows, columns = np.nonzero(channel_seq[: len(instruments)])
    return {
        (instruments[row], intervals[column]): int(channel_seq[row, column])
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True)
    }


@dataclass(frozen=True, slots=True)
class LateTrade:
    """A trade older than its source's latest trade in the partition minus the maximum lateness."""

    instrument: str
    ts_event_us: int
    price: float
    size: float
    latest_trade_us: int  # the source's latest trade in the partition when this one arrived


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


NEVER_US: Final = np.int64(np.iinfo(np.int64).min // 2)  # a source's clock before any message


class BarBook:
    """All bar state of one partition, as numpy arrays folded by the kernels.

    State is kept per (source, instrument) row: each source has its own event-time clock, so a
    replay of last month beside a live feed, or the same file replayed twice, folds into windows
    of its own and yields exactly its bars. Sequence numbers are per channel (instrument and
    interval), whatever source a bar came from. A source whose clock has run a day past its
    latest trade is idle: its windows are all emitted and its rows are released (`_retire`).
    """

    def __init__(
        self, config: BarsConfig, capacity: int = 16, scratch: FoldScratch | None = None
    ) -> None:
        self.config = config
        self.instruments: list[str] = []  # every instrument seen: the channels' dictionary
        self.instrument_ids: dict[str, int] = {}
        self.row_keys: list[tuple[int, int]] = []  # (source, instrument) of each row
        self.rows: dict[tuple[int, int], int] = {}
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
        # a day (the longest interval) plus the lateness past its latest trade: nothing is open
        self._idle_us = 86_400_000_000 + config.max_lateness_us
        self.fstate: NDArray[np.float64] = np.zeros((0, k.N_FLOAT))
        self.istate: NDArray[np.int64] = np.zeros((0, k.N_INT), np.int64)
        self.state: NDArray[np.int8] = np.zeros(0, np.int8)
        self.row_instrument: NDArray[np.int64] = np.zeros(0, np.int64)
        self.channel_seq: NDArray[np.int64] = np.zeros((0, len(config.intervals)), np.int64)
        self.capacity = 0
        self._allocate(capacity)
        self._scratch = scratch or FoldScratch()

    def _allocate(self, capacity: int) -> None:
        """Size the state for `capacity` rows, keeping the rows in use."""
        n = capacity * self._per
        fstate = np.zeros((n, k.N_FLOAT))
        istate = np.zeros((n, k.N_INT), np.int64)
        state = np.zeros(n, np.int8)
        used = len(self.row_keys) * self._per
        fstate[:used], istate[:used], state[:used] = (
            self.fstate[:used],
            self.istate[:used],
            self.state[:used],
        )
        row_instrument = np.zeros(capacity, np.int64)
        row_instrument[: len(self.row_keys)] = self.row_instrument[: len(self.row_keys)]
        self.fstate, self.istate, self.state = fstate, istate, state
        self.row_instrument = row_instrument
        self.capacity = capacity
        self._forget_windows()

    def _forget_windows(self) -> None:
        """Reset the kernel's cache of each row's current window (slot -1: nothing remembered)."""
        self.window_start = np.zeros((self.capacity, len(self.config.intervals)), np.int64)
        self.window_slot = np.full((self.capacity, len(self.config.intervals)), -1, np.int64)

    def _instrument_of(self, name: str) -> int:
        instrument = self.instrument_ids.get(name)
        if instrument is None:
            instrument = self.instrument_ids[name] = len(self.instruments)
            self.instruments.append(name)
            if instrument >= len(self.channel_seq):
                grown = np.zeros((max(16, 2 * instrument), len(self._interval_names)), np.int64)
                grown[: len(self.channel_seq)] = self.channel_seq
                self.channel_seq = grown
        return instrument

    def _row_of(self, source: int, name: str) -> int:
        key = (source, self._instrument_of(name))
        row = self.rows.get(key)
        if row is None:
            row = len(self.row_keys)
            if row >= self.capacity:
                self._allocate(2 * self.capacity)
            self.rows[key] = row
            self.row_keys.append(key)
            self.row_instrument[row] = key[1]
        return row

    def _source_of(self, name: str) -> int:
        source = self.source_ids.get(name)
        if source is None:
            source = self.source_ids[name] = len(self.sources)
            self.sources.append(name)
            self.latest_trade_us = np.append(self.latest_trade_us, NEVER_US)
            self.watermarks = np.append(self.watermarks, NEVER_US)
        return source

    def fold(self, batch: TradeBatch) -> FoldResult:
        """Fold one message's trades, advance its source's watermark, and emit what is due."""
        cfg = self.config
        source = self._source_of(batch.source)
        known_rows = len(self.row_keys)
        rows = np.array([self._row_of(source, name) for name in batch.instruments], np.int64)
        trade_rows = rows[batch.instrument_index] if len(batch) else np.empty(0, np.int64)
        side = batch.side if batch.side is not None else np.zeros(len(batch), np.int8)
        too_late = np.zeros(len(batch), dtype=np.bool_)
        latest_before = int(self.latest_trade_us[source])
        out = self._scratch
        out.ensure(len(self.row_keys) * self._per + len(batch) * len(cfg.intervals))
        n = k.fold_trades(
            rows=trade_rows,
            ts=batch.ts_event_us,
            price=batch.price,
            size=batch.size,
            side=side,
            source=source,
            latest_trade_us=self.latest_trade_us,
            max_lateness_us=cfg.max_lateness_us,
            intervals_us=self._lengths,
            ring_offsets=self._ring_offsets,
            ring_sizes=self._ring_sizes,
            slots_per_instrument=self._per,
            window_start=self.window_start,
            window_slot=self.window_slot,
            fstate=self.fstate,
            istate=self.istate,
            state=self.state,
            too_late=too_late,
            out_slot=out.slot,
            out_f=out.f,
            out_i=out.i,
        )
        self.watermarks[source] = max(
            int(self.watermarks[source]), int(self.latest_trade_us[source]), batch.watermark_us
        )
        n = k.close_due(
            n_rows=len(self.row_keys),
            watermarks=self.watermarks,
            grace_us=cfg.grace_us,
            intervals_us=self._lengths,
            ring_offsets=self._ring_offsets,
            ring_sizes=self._ring_sizes,
            slots_per_instrument=self._per,
            fstate=self.fstate,
            istate=self.istate,
            state=self.state,
            out_slot=out.slot,
            out_f=out.f,
            out_i=out.i,
            n_out=n,
        )
        emitted = self._emitted(n)
        latest = self.latest_trade_us[source]
        if latest > NEVER_US and self.watermarks[source] - latest > self._idle_us:
            self._retire(source)
        elif len(self.row_keys) > known_rows:  # rows opened for trades that were all too late
            self._release(
                [
                    row
                    for row in range(known_rows, len(self.row_keys))
                    if not self.state[row * self._per : (row + 1) * self._per].any()
                ]
            )
        return FoldResult(emitted, self._late(batch, too_late, latest_before))

    def _retire(self, source: int) -> None:
        """Release an idle source's rows; its later trades older than its clock less the maximum
        lateness are too late.

        Every window of the source is emitted by now (none is longer than a day), so its rows
        hold nothing a bar still needs; raising its latest trade to its clock keeps a straggler
        from opening a window that was already emitted in full, since every such window ended
        a day before the clock.
        """
        self.latest_trade_us[source] = self.watermarks[source]
        self._release([row for row, key in enumerate(self.row_keys) if key[0] == source])

    def _release(self, rows: list[int]) -> None:
        """Drop `rows` from the book, moving the others down in order."""
        if not rows:
            return
        gone = set(rows)
        keep = [row for row in range(len(self.row_keys)) if row not in gone]
        slots = (np.array(keep, np.int64)[:, None] * self._per + np.arange(self._per)).ravel()
        used = len(keep) * self._per
        self.fstate[:used] = self.fstate[slots]
        self.istate[:used] = self.istate[slots]
        self.state[:used] = self.state[slots]
        self.state[used:] = k.EMPTY
        self.row_instrument[: len(keep)] = self.row_instrument[keep]
        self.row_keys = [self.row_keys[row] for row in keep]
        self.rows = {key: row for row, key in enumerate(self.row_keys)}
        self._forget_windows()

    def channel_seqs(self) -> ChannelSeqs:
        """Return the last seq of every channel that has emitted: (instrument, interval) -> seq."""
        return _channel_seqs(self.instruments, self._interval_names, self.channel_seq)

    @classmethod
    def continuing(
        cls, config: BarsConfig, seqs: ChannelSeqs, scratch: FoldScratch | None = None
    ) -> BarBook:
        """Return an empty book whose channels continue from `seqs` (those of its intervals).

        For a book that cannot be restored (its checkpoint is of another incarnation of the
        input topic, or of other intervals): its windows are gone, but subscribers hold the
        channels' sequence numbers, and a channel's seq must never go back.
        """
        book = cls(config, scratch=scratch)
        column = {name: i for i, name in enumerate(book._interval_names)}
        for (instrument, interval), seq in seqs.items():
            if interval in column:
                row = book._instrument_of(instrument)
                book.channel_seq[row, column[interval]] = seq
        return book

    def _emitted(self, n: int) -> BarBatch:
        instrument = np.empty(n, np.int64)
        interval, seq = np.empty(n, np.int64), np.empty(n, np.int64)
        k.number_bars(
            out_slot=self._scratch.slot,
            n_out=n,
            slots_per_instrument=self._per,
            slot_interval=self._slot_interval,
            row_instrument=self.row_instrument,
            channel_seq=self.channel_seq,
            instrument=instrument,
            interval=interval,
            seq=seq,
        )
        f, i = self._scratch.f[:n], self._scratch.i[:n]
        doubles = np.empty((n, len(BAR_DOUBLES)))
        doubles[:, :5] = f[:, [k.F_OPEN, k.F_HIGH, k.F_LOW, k.F_CLOSE, k.F_VOLUME]]
        doubles[:, 5] = f[:, k.F_PV] / f[:, k.F_VOLUME]
        doubles[:, 6:] = f[:, [k.F_BUY, k.F_SELL]]
        return BarBatch(
            instruments=self.instruments,
            intervals=self._interval_names,
            sources=self.sources,
            instrument_index=instrument,
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

    @staticmethod
    def _late(batch: TradeBatch, too_late: NDArray[np.bool_], latest_us: int) -> list[LateTrade]:
        if not too_late.any():
            return []
        # the source's latest trade as each trade arrived (too-late trades never raise it)
        latest = np.maximum.accumulate(np.concatenate([[latest_us], batch.ts_event_us]))
        return [
            LateTrade(
                batch.instruments[batch.instrument_index[t]],
                int(batch.ts_event_us[t]),
                float(batch.price[t]),
                float(batch.size[t]),
                int(latest[t]),
            )
            for t in np.flatnonzero(too_late).tolist()
        ]

    def snapshot(self) -> bytes:
        """Serialise the book (compressed numpy arrays plus names) for a checkpoint."""
        return encode_snapshot(self.snapshot_arrays())

    def snapshot_arrays(self) -> dict[str, NDArray[Any]]:
        """Copy the occupied slots a checkpoint needs: cheap, so compressing can run in a thread."""
        used = len(self.row_keys) * self._per
        occupied = np.flatnonzero(self.state[:used] != k.EMPTY)
        meta = {
            "instruments": self.instruments,
            "rows": self.row_keys,
            "sources": self.sources,
            "intervals": self._interval_names,
            "layout": self.config.fingerprint(),
        }
        return {
            "occupied": occupied,
            "fstate": self.fstate[occupied],
            "istate": self.istate[occupied],
            "state": self.state[occupied],
            "watermarks": self.watermarks.copy(),
            "latest_trade_us": self.latest_trade_us.copy(),
            "channel_seq": self.channel_seq[: len(self.instruments)].copy(),
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
            instruments = meta.get("instruments", meta.get("names"))
            rows = meta["rows"] if "rows" in meta else None
            book = cls(
                config,
                capacity=max(16, len(instruments if rows is None else rows)),
                scratch=scratch,
            )
            # snapshots hold only the occupied slots; the first ones held every slot in use
            occupied = (
                arrays["occupied"]
                if "occupied" in arrays
                else np.arange(len(instruments) * book._per)
            )
            book.fstate[occupied], book.istate[occupied], book.state[occupied] = (
                arrays["fstate"],
                arrays["istate"],
                arrays["state"],
            )
            book.watermarks = arrays["watermarks"].copy()
            book.latest_trade_us = arrays["latest_trade_us"].copy()
            for name in instruments:
                book._instrument_of(name)
            book.channel_seq[: len(instruments)] = arrays["channel_seq"]
        book.sources = list(meta["sources"])
        book.source_ids = {name: i for i, name in enumerate(book.sources)}
        if rows is None:
            book._split_instrument_rows(len(instruments))
        else:
            book.row_keys = [(int(source), int(instrument)) for source, instrument in rows]
            book.row_instrument[: len(rows)] = [instrument for _, instrument in book.row_keys]
        book.rows = {key: row for row, key in enumerate(book.row_keys)}
        return book

    def _split_instrument_rows(self, instruments: int) -> None:
        """Adopt a book from before per-source rows: a row per instrument, holding windows of
        any source, and latest trades never advanced (the kernel was handed the watermarks).

        Each source's windows move to a row of their own, and each source's latest trade is
        the latest trade of its windows, so folding continues as if the book had been kept so.
        """
        per = self._per
        self.row_keys = []
        extra: list[tuple[int, int]] = []  # (row, source) of windows to move to a row of their own
        for row in range(instruments):
            slots = slice(row * per, (row + 1) * per)
            occupied = self.state[slots] != k.EMPTY
            sources = sorted(set(self.istate[slots, k.I_SOURCE][occupied].tolist())) or [0]
            self.row_keys.append((sources[0], row))
            self.row_instrument[row] = row
            extra += [(row, source) for source in sources[1:]]
        for row, source in extra:
            new = len(self.row_keys)
            if new >= self.capacity:
                self._allocate(2 * self.capacity)
            old, moved = slice(row * per, (row + 1) * per), slice(new * per, (new + 1) * per)
            mine = (self.state[old] != k.EMPTY) & (self.istate[old, k.I_SOURCE] == source)
            self.fstate[moved][mine] = self.fstate[old][mine]
            self.istate[moved][mine] = self.istate[old][mine]
            self.state[moved][mine] = self.state[old][mine]
            self.state[old][mine] = k.EMPTY
            self.row_keys.append((source, row))
            self.row_instrument[new] = row
        used = len(self.row_keys) * per
        occupied = self.state[:used] != k.EMPTY
        for source in range(len(self.sources)):
            mine = occupied & (self.istate[:used, k.I_SOURCE] == source)
            if mine.any():
                latest = int(self.istate[:used, k.I_CLOSE_TS][mine].max())
                self.latest_trade_us[source] = max(int(self.latest_trade_us[source]), latest)
