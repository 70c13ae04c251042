"""MS_REAL_DATA_ONLY=true, as the production manifests set it: synthetic sources refuse to
start, and workers dead-letter what such a source published anyway."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from conftest import RunningWorker, at_least, read_topic, run_module

from shared.codec import Codec
from shared.models import TradeBatch
from shared.partitioning import partition_for
from shared.publisher import Publisher
from shared.topics import BARS, DLQ, TRADES

T0 = 1_767_623_400_000_000  # 2026-01-05T14:30:00Z


@pytest.mark.parametrize(
    ("module", "refusal"),
    [
        (["connectors", "run", "simulator"], "the simulator connector makes up its data"),
        (["connectors.fakes.alpaca", "--port", "0"], "the fake Alpaca does not start"),
        (["connectors.fakes.finnhub", "--port", "0"], "the fake Finnhub does not start"),
        (["connectors.fakes.yahoo", "--port", "0"], "the fake Yahoo does not start"),
        (["connectors.fakes.alphavantage", "--port", "0"], "does not start"),
        (["connectors.fakes.fmp", "--port", "0"], "the fake FMP does not start"),
        (["connectors.fakes.kalshi", "--port", "0"], "the fake Kalshi does not start"),
        (["connectors.fakes.polymarket", "--port", "0"], "the fake Polymarket does not start"),
    ],
)
def test_real_data_only_synthetic_sources_refuse_to_start(module: list[str], refusal: str) -> None:
    done = run_module(module, {"MS_REAL_DATA_ONLY": "true"}, timeout_s=60)

    assert done.returncode == 2, done.stdout + done.stderr
    assert refusal in done.stderr and "Traceback" not in done.stderr


def _batch(source: str, symbol: str) -> TradeBatch:
    return TradeBatch(
        source=source,
        instruments=(symbol,),
        instrument_index=np.zeros(2, np.int32),
        ts_event_us=np.array([T0, T0 + 1_000_000], np.int64),
        ts_recv_us=np.array([T0 + 900, T0 + 1_000_900], np.int64),
        price=np.array([187.25, 187.5]),
        size=np.array([100.0, 50.0]),
        watermark_us=T0 + 1_000_000,
    )


async def test_real_data_only_worker_dead_letters_simulator_batches_and_folds_the_rest(
    bootstrap: str, codec: Codec, start_worker: Callable[..., RunningWorker]
) -> None:
    # Arrange: a worker in real-data-only mode
    start_worker(MS_WORKER_AGENTS="aggregate_bars", MS_REAL_DATA_ONLY="true")
    publisher = Publisher({"bootstrap.servers": bootstrap, "acks": "all"})

    # Act: a simulator batch, then a real feed's, in the same partition
    partition = partition_for("AAPL", 3)
    closing = TradeBatch.heartbeat("alpaca", T0 + 2 * 86_400_000_000)
    for batch in (_batch("simulator", "AAPL"), _batch("alpaca", "AAPL"), closing):
        publisher.produce(TRADES, codec.encode_trade_batch(batch), partition=partition)
    publisher.flush()

    # Assert: the simulator's is dead-lettered with its reason; the feed's is not
    letters = [
        codec.decode_dead_letter(m.value())
        for m in read_topic(bootstrap, DLQ, at_least(1), timeout_s=60)
    ]
    assert [(d.reason, d.source_offset) for d in letters] == [("synthetic_source", 0)]
    assert "'simulator' is synthetic" in letters[0].detail
    bars = [codec.decode_bar(m.value()) for m in read_topic(bootstrap, BARS, at_least(9), 60)]
    assert {b.source for b in bars} == {"alpaca"}
    assert [b.trade_count for b in bars if b.interval == "1d"] == [2]  # not the simulator's
