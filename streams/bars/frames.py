"""Emitted bars as Kafka messages: framed Avro `Bar` values, keys and partitions, all at once.

A fold emits thousands of bars; building a `Bar` and calling fastavro for each would cost more
than the fold. One numba kernel writes every frame into a single buffer instead, byte for byte
what fastavro writes (tests compare them), from the columns of `BarBatch` and string tables
holding each name's Avro encoding, extended as instruments and sources appear.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from numpy.typing import NDArray

from shared.avro_kernels import MAX_VARINT_BYTES, put_varint
from shared.bar_fields import BAR_DOUBLES
from shared.codec import HEADER, MAGIC, encode_string
from shared.models import BarBatch
from shared.partitioning import partition_for

# varints a Bar holds besides its strings: ts, revision, trade_count, ts_event, ts_recv, seq
_VARINTS = 6


@numba.njit(cache=True, nogil=True, inline="always")
def _put_bytes(
    out: NDArray[np.uint8], pos: int, table: NDArray[np.uint8], offsets: NDArray[np.int64], i: int
) -> int:
    for j in range(offsets[i], offsets[i + 1]):
        out[pos] = table[j]
        pos += 1
    return pos


@numba.njit(cache=True, nogil=True)
def encode_bar_frames(
    header: NDArray[np.uint8],
    row: NDArray[np.int64],
    interval: NDArray[np.int64],
    source: NDArray[np.int64],
    ts_us: NDArray[np.int64],
    revision: NDArray[np.int64],
    trade_count: NDArray[np.int64],
    ts_event_us: NDArray[np.int64],
    seq: NDArray[np.int64],
    doubles: NDArray[np.uint8],
    ts_recv_us: int,
    names: NDArray[np.uint8],
    name_offsets: NDArray[np.int64],
    intervals: NDArray[np.uint8],
    interval_offsets: NDArray[np.int64],
    sources: NDArray[np.uint8],
    source_offsets: NDArray[np.int64],
    out: NDArray[np.uint8],
    ends: NDArray[np.int64],
) -> None:
    """Write bar b's frame (header, then the Bar fields in schema order) ending at ends[b].

    `doubles` is the (bars, 64) byte view of BarBatch.doubles: Avro doubles are little-endian
    IEEE 754, numpy's layout, so they are copied as they are.
    """
    pos = 0
    for b in range(row.shape[0]):
        for j in range(header.shape[0]):
            out[pos + j] = header[j]
        pos += header.shape[0]
        pos = _put_bytes(out, pos, names, name_offsets, row[b])
        pos = _put_bytes(out, pos, intervals, interval_offsets, interval[b])
        pos = put_varint(out, pos, ts_us[b])
        pos = put_varint(out, pos, revision[b])
        for j in range(48):  # open, high, low, close, volume, vwap
            out[pos + j] = doubles[b, j]
        pos = put_varint(out, pos + 48, trade_count[b])
        for j in range(16):  # buy_volume, sell_volume
            out[pos + j] = doubles[b, 48 + j]
        pos = _put_bytes(out, pos + 16, sources, source_offsets, source[b])
        pos = put_varint(out, pos, ts_event_us[b])
        pos = put_varint(out, pos, ts_recv_us)
        pos = put_varint(out, pos, seq[b])
        ends[b] = pos


class StringTable:
    """Strings in their Avro encoding (length varint, UTF-8), concatenated, with offsets."""

    def __init__(self) -> None:
        self.count = 0
        self._parts: list[bytes] = []
        self.data = np.zeros(0, np.uint8)
        self.offsets = np.zeros(1, np.int64)
        self.longest = 0

    def sync(self, strings: Sequence[str]) -> None:
        """Append the strings added to `strings` since the last call (tables only grow)."""
        if len(strings) == self.count:
            return
        self._parts += [encode_string(text) for text in strings[self.count :]]
        self.count = len(strings)
        self.data = np.frombuffer(b"".join(self._parts), np.uint8)
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self._parts])])
        self.longest = max(len(p) for p in self._parts)


class BarFrames:
    """Turn one partition book's emitted bars into Kafka message values, keys and partitions."""

    def __init__(self, schema_id: int, partitions: int) -> None:
        self.header = np.frombuffer(HEADER.pack(MAGIC, schema_id), np.uint8)
        self.partitions = partitions
        self.names, self.intervals, self.sources = StringTable(), StringTable(), StringTable()
        self.keys: list[bytes] = []
        self.partition_of: list[int] = []

    def _sync(self, bars: BarBatch) -> None:
        known = len(self.keys)
        self.names.sync(bars.instruments)
        self.intervals.sync(bars.intervals)
        self.sources.sync(bars.sources)
        for name in bars.instruments[known:]:
            self.keys.append(name.encode())
            self.partition_of.append(partition_for(name, self.partitions))

    def encode(self, bars: BarBatch) -> dict[int, list[dict[str, object]]]:
        """Return one message (value, key) per bar, grouped by the partition they go to.

        Grouped because confluent-kafka's `produce_batch` sends a batch to one partition (the
        batch's, whatever a message names); each group keeps the order the bars were emitted in.
        """
        if not len(bars):
            return {}
        self._sync(bars)
        longest = self.names.longest + self.intervals.longest + self.sources.longest
        size = len(self.header) + longest + 8 * len(BAR_DOUBLES) + _VARINTS * MAX_VARINT_BYTES
        out = np.empty(len(bars) * size, np.uint8)
        ends = np.empty(len(bars), np.int64)
        encode_bar_frames(
            self.header,
            bars.instrument_index,
            bars.interval_index,
            bars.source_index,
            bars.ts_us,
            bars.revision,
            bars.trade_count,
            bars.ts_event_us,
            bars.seq,
            bars.doubles.view(np.uint8),
            bars.ts_recv_us,
            self.names.data,
            self.names.offsets,
            self.intervals.data,
            self.intervals.offsets,
            self.sources.data,
            self.sources.offsets,
            out,
            ends,
        )
        data = out[: ends[-1]].tobytes()
        starts = [0, *ends[:-1].tolist()]
        keys, partition_of = self.keys, self.partition_of
        groups: list[list[dict[str, object]]] = [[] for _ in range(self.partitions)]
        rows = bars.instrument_index.tolist()
        for start, end, row in zip(starts, ends.tolist(), rows, strict=True):
            groups[partition_of[row]].append({"value": data[start:end], "key": keys[row]})
        return {partition: group for partition, group in enumerate(groups) if group}
