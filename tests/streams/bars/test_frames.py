"""Bars as Kafka messages: the numba frames equal fastavro's, byte for byte, keyed and partitioned."""

from __future__ import annotations

import dataclasses

import numpy as np
from test_core import T0, batch_of, generated_trades

from shared.codec import BAR, Codec
from shared.models import TradeBatch
from shared.partitioning import partition_for
from shared.schema_ids import CommittedSchemas
from streams.bars.core import BarBook, BarsConfig
from streams.bars.frames import BarFrames

CONFIG = BarsConfig.parse("1s,5s,1m,1h,1d", grace_s=2.0, max_lateness_s=60.0)


def test_frames_equal_fastavro_for_every_bar_and_revision() -> None:
    codec = Codec(CommittedSchemas())
    book = BarBook(CONFIG)
    messages = BarFrames(codec.schema_id(BAR), partitions=6)
    renamed = {"AAPL": "ÄPFEL", "MSFT": "株式-7203", "BRK.B": "B" * 300}  # UTF-8, long names
    trades = [(renamed.get(s, s), *rest) for s, *rest in generated_trades(seed=7, n=3000)]
    checked = revisions = 0
    for i in range(0, len(trades), 200):
        batch = batch_of(trades[i : i + 200])
        if i % 400:  # a second source, whose strings join the table later
            batch = dataclasses.replace(batch, source="second-source")
        result = book.fold(batch)
        encoded = messages.encode(result.emitted)
        for partition in range(6):
            bars = [b for b in result.bars if partition_for(b.instrument, 6) == partition]
            group = encoded.pop(partition, [])
            assert [m["value"] for m in group] == [codec.encode_bar(bar) for bar in bars]
            assert [m["key"] for m in group] == [bar.instrument.encode() for bar in bars]
            checked += len(bars)
            revisions += sum(1 for bar in bars if bar.revision)
        assert not encoded
        revisions += sum(1 for bar in bars if bar.revision)
    closing = book.fold(TradeBatch.heartbeat("test", T0 + 3 * 86_400_000_000))
    closing_values = [
        m["value"] for group in messages.encode(closing.emitted).values() for m in group
    ]
    assert sorted(closing_values) == sorted(codec.encode_bar(bar) for bar in closing.bars)  # type: ignore[type-var]
    assert checked > 1000 and revisions >= 5


def test_no_bars_no_messages() -> None:
    book = BarBook(CONFIG)
    result = book.fold(batch_of([("X", T0, 1.0, 1.0, 0)]))
    assert len(result.emitted) == 0
    assert BarFrames(3, partitions=6).encode(result.emitted) == {}
    assert np.array_equal(result.emitted.doubles, np.empty((0, 8)))
