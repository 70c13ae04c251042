"""BarBatch, the columnar bars the sink reads: byte for byte what fastavro writes, round trips,
and every malformed message refused with DecodeError."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import fastavro
import numpy as np
import pytest

import schemas
from shared.codec import Codec, frame
from shared.errors import DecodeError
from shared.models import BarBatch

T0 = 1_767_623_400_000_000  # 2026-01-05T14:30:00Z


def sample(bars: int = 5) -> BarBatch:
    """Bars of two sources and three intervals, UTF-8 and long names, a name no bar uses,
    revisions, pre-1970 and far-future times, tiny and huge prices."""
    rng = np.random.default_rng(7)
    return BarBatch(
        instruments=("ÄPFEL", "UNUSED", "株式-7203", "X" * 200),
        intervals=("1s", "1m", "1d"),
        sources=("alpha", "beta"),
        instrument_index=np.array([0, 2, 3, 0, 2])[:bars],
        interval_index=np.array([0, 0, 1, 2, 2])[:bars],
        source_index=np.array([1, 0, 0, 1, 0])[:bars],
        ts_us=np.array([T0, T0, T0, -86_400_000_000, 2**62])[:bars],
        revision=np.array([0, 3, 0, 2**31 - 1, 0])[:bars],
        trade_count=np.array([1, 7, 2**40, 3, 1])[:bars],
        ts_event_us=np.array([T0 + 1, T0 + 999_999, T0 + 5, -1, 2**62 + 5])[:bars],
        seq=np.array([1, 4, 1, 9, 2**50])[:bars],
        doubles=np.column_stack(
            [rng.uniform(1e-9, 1e300, bars) for _ in range(6)] + [rng.uniform(0, 10, (bars, 2))]
        ),
        ts_recv_us=T0 + 2_000_000,
    )


def fastavro_record(batch: BarBatch) -> dict[str, Any]:
    """The record as fastavro would be given it: dictionaries of the names in use, in order."""

    def used(names: Any, index: np.ndarray) -> tuple[list[str], list[int]]:
        kept = sorted(set(index.tolist()))
        return [names[i] for i in kept], [kept.index(i) for i in index.tolist()]

    instruments, instrument_index = used(batch.instruments, batch.instrument_index)
    intervals, interval_index = used(batch.intervals, batch.interval_index)
    sources, source_index = used(batch.sources, batch.source_index)
    columns = dict(
        zip(
            ("open", "high", "low", "close", "volume", "vwap", "buy_volume", "sell_volume"),
            batch.doubles.T.tolist(),
            strict=True,
        )
    )
    return {
        "instruments": instruments,
        "intervals": intervals,
        "sources": sources,
        "instrument_index": instrument_index,
        "interval_index": interval_index,
        "source_index": source_index,
        "ts": batch.ts_us.tolist(),
        "revision": batch.revision.tolist(),
        "trade_count": batch.trade_count.tolist(),
        "ts_event": batch.ts_event_us.tolist(),
        "seq": batch.seq.tolist(),
        "ts_recv": batch.ts_recv_us,
        **columns,
    }


def fastavro_body(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schemas.load("bar_batch"), record)
    return out.getvalue()


def test_bar_batch_encoding_equals_fastavro_and_round_trips(codec: Codec) -> None:
    batch = sample()

    data = codec.encode_bar_batch(batch)

    assert data[5:] == fastavro_body(fastavro_record(batch))
    assert codec.decode_bar_batch(data).bars() == batch.bars()
    assert [bar.instrument for bar in batch.bars()][:3] == ["ÄPFEL", "株式-7203", "X" * 200]


def test_bar_batch_every_truncation_and_trailing_garbage_raise_decode_error(codec: Codec) -> None:
    data = codec.encode_bar_batch(sample())
    outcomes: dict[int, str] = {}
    for cut in [*range(len(data)), -1]:
        bad = data[:cut] if cut >= 0 else data + b"\x02"
        try:
            outcomes[cut] = f"returned {codec.decode_bar_batch(bad)!r}"
        except DecodeError:
            continue
        except Exception as exc:  # any other exception is a bug
            outcomes[cut] = f"{type(exc).__name__}: {exc}"
    assert outcomes == {}


@pytest.mark.parametrize(
    "change",
    [
        {"instrument_index": [5]},
        {"source_index": [-1]},
        {"seq": [1, 2]},
    ],
    ids=["index-past-end", "negative-index", "column-lengths-differ"],
)
def test_bar_batch_inconsistent_columns_raise_decode_error(
    codec: Codec, change: dict[str, list[int]]
) -> None:
    one = dataclasses.replace(
        sample(),
        **{
            name: np.arange(1)
            for name in (
                "instrument_index",
                "interval_index",
                "source_index",
                "ts_us",
                "revision",
                "trade_count",
                "ts_event_us",
                "seq",
            )
        },
        doubles=np.ones((1, 8)),
    )
    record = fastavro_record(one) | change
    data = frame(codec.schema_id("bar_batch"), fastavro_body(record))

    with pytest.raises(DecodeError):
        codec.decode_bar_batch(data)


def test_bar_message_is_not_a_bar_batch(codec: Codec) -> None:
    bar = sample().bars()[0]

    with pytest.raises(DecodeError, match="expected a bar_batch message"):
        codec.decode_bar_batch(codec.encode_bar(bar))
