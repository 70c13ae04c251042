"""The Faust worker against the real broker: stats from trade batches, undecodable input
dead-lettered, and the agents split across two worker processes."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import psycopg
import pytest
from conftest import RunningWorker, at_least, eventually, read_topic

from shared.codec import Codec
from shared.intervals import DEFAULT_INTERVALS
from shared.models import TradeBatch
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.topics import BAR_BATCHES, DLQ, TRADES


def metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        return str(response.read().decode())


def stats(url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
        body: dict[str, object] = orjson.loads(response.read())
        return body


async def test_worker_valid_batches_and_garbage_yields_stats_and_dead_letter(
    bootstrap: str, codec: Codec, start_worker: Callable[..., RunningWorker]
) -> None:
    url = start_worker().url
    batch = TradeBatch(
        source="test",
        instruments=("XYZ", "ABC"),
        instrument_index=np.array([0, 1, 0, 0], np.int32),
        ts_event_us=np.array([10, 20, 40, 30]),
        ts_recv_us=np.array([50, 50, 50, 50]),
        price=np.array([1.5, 2.0, 1.75, 1.25]),
        size=np.array([10.0, 1.0, 2.0, 3.0]),
    )
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publisher.produce(TRADES, codec.encode_trade_batch(batch), partition=0)
    publisher.produce(TRADES, b"\x00\x00\x00\x00\x01garbage", key=b"bad-key", partition=1)
    publisher.flush()

    await eventually(
        lambda: stats(url)["trades"] == 4, timeout_s=60, what="worker folded the batch"
    )
    instruments = stats(url)["instruments"]
    assert instruments["XYZ"] == {
        "trades": 3,
        "volume": 15.0,
        "last_price": 1.75,  # type: ignore[index]
        "last_ts_event_us": 40,
        "source": "test",
    }
    letters = [
        codec.decode_dead_letter(m.value())
        for m in read_topic(bootstrap, DLQ, at_least(3), timeout_s=30)
    ]
    assert sorted(letter.component for letter in letters) == [
        "worker.aggregate_bars",
        "worker.tally_trades",
        "worker.track_prices",
    ]
    for letter in letters:
        assert (letter.reason, letter.source) == ("undecodable", TRADES)
        assert (letter.source_partition, letter.source_offset, letter.key) == (1, 0, b"bad-key")
        assert letter.payload == b"\x00\x00\x00\x00\x01garbage"
    exposed = await asyncio.to_thread(metrics, url)
    assert 'dead_letters_total{component="worker.tally_trades",reason="undecodable"} 1.0' in exposed


async def test_bar_worker_and_sink_worker_apart_fill_the_database(
    bootstrap: str,
    codec: Codec,
    database_url: str,
    start_worker: Callable[..., RunningWorker],
    tmp_path: Path,
) -> None:
    bars = start_worker(MS_WORKER_AGENTS="aggregate_bars,tally_trades").url
    sink = start_worker(
        MS_WORKER_AGENTS="sink_bars",
        MS_WORKER_DATA_DIR=str(tmp_path / "sink"),
        MS_WORKER_LAG_INTERVAL_S="0.5",
    ).url
    t0 = 1_767_623_400_000_000  # 2026-01-05T14:30:00Z
    batch = TradeBatch(
        source="test",
        instruments=("XYZ",),
        instrument_index=np.zeros(3, np.int32),
        ts_event_us=np.array([t0, t0 + 100, t0 + 200]),
        ts_recv_us=np.full(3, t0),
        price=np.array([1.0, 3.0, 2.0]),
        size=np.array([1.0, 1.0, 2.0]),
    )
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    partition = partition_for("XYZ", 3)
    publisher.produce(TRADES, codec.encode_trade_batch(batch), partition=partition)
    closing = TradeBatch.heartbeat("test", t0 + 2 * 86_400_000_000)
    publisher.produce(TRADES, codec.encode_trade_batch(closing), partition=partition)
    publisher.flush()

    def sunk() -> list[tuple[str, float, float, float, float]]:
        with psycopg.connect(database_url) as conn:
            return conn.execute(
                'select "interval", open, high, low, close from bars where instrument = %s',
                ("XYZ",),
            ).fetchall()

    await eventually(lambda: len(sunk()) == 9, timeout_s=60, what="nine bars in the database")
    assert set(sunk()) == {(i, 1.0, 3.0, 1.0, 2.0) for i in DEFAULT_INTERVALS.split(",")}
    assert stats(bars)["trades"] == 3
    with pytest.raises(urllib.error.HTTPError, match="404"):
        stats(sink)  # /stats belongs to tally_trades, which the sink worker does not run
    assert "bars_sunk_total 9.0" in metrics(sink)
    acked = 'kafka_messages_acked_total{topic="md.bars.v1"} 9.0'
    await eventually(lambda: acked in metrics(bars), what="the bar worker reports 9 bars acked")
    for agent in ("aggregate_bars", "tally_trades"):  # the batch and the heartbeat
        assert f'agent_messages_total{{agent="{agent}",topic="md.trades.v1"}} 2.0' in metrics(bars)
    caught_up = re.compile(
        r'consumer_lag_messages\{group="test-worker.sink_bars",partition="\d",'
        r'topic="md.bars.batch.v1"\} 0.0'
    )
    await eventually(
        lambda: caught_up.search(metrics(sink)) is not None,
        what="the sink worker exports its group's lag: none once it committed",
    )


async def test_sink_worker_dead_letters_an_undecodable_bar_batch(
    bootstrap: str, codec: Codec, start_worker: Callable[..., RunningWorker]
) -> None:
    start_worker(MS_WORKER_AGENTS="sink_bars")
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})
    publisher.produce(BAR_BATCHES, b"\x00\x00\x00\x00\x04garbage", key=b"k", partition=2)
    publisher.flush()

    (message,) = read_topic(bootstrap, DLQ, at_least(1), timeout_s=60)
    letter = codec.decode_dead_letter(message.value())
    assert (letter.component, letter.reason) == ("worker.sink_bars", "undecodable")
    assert (letter.source, letter.source_partition, letter.source_offset) == (BAR_BATCHES, 2, 0)
    assert letter.payload == b"\x00\x00\x00\x00\x04garbage"
