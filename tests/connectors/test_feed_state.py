"""GET /stats/providers of a single-provider connector: the runner's view of its feed (state,
errors by kind, data age, instruments served), through reconnects and a fatal error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

import numpy as np
import pytest
from confluent_kafka import Message
from conftest import read_topic
from test_runner_reload import T0, _runner, _Slow, _until

from connectors.base import Connector, ConnectorConfig, Record, Rejected
from shared.codec import Codec
from shared.errors import FatalError, TransientError
from shared.models import TradeBatch
from shared.topics import TRADES


class _Flaky(Connector):
    """Two sessions that each send two batches and drop; the third is refused for good."""

    name: ClassVar[str] = "flaky"
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self) -> None:
        super().__init__(ConnectorConfig())
        self.sessions = 0

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        self.sessions += 1
        if self.sessions == 3:
            raise FatalError("flaky refused the API key (402)")
        for k, symbol in enumerate(("AAPL", "MSFT")):
            yield TradeBatch(
                source=self.name,
                instruments=(symbol,),
                instrument_index=np.zeros(1, np.int32),
                ts_event_us=np.array([T0 + k], np.int64),
                ts_recv_us=np.array([T0 + k + 500], np.int64),
                price=np.array([187.25]),
                size=np.array([10.0]),
            )
        yield Rejected("malformed_trade", "price is not a number", b'{"p":"x"}')
        raise TransientError("socket closed 1006")


async def test_feed_state_through_reconnects_and_a_fatal_error(
    bootstrap: str, codec: Codec
) -> None:
    connector = _Flaky()
    runner = _runner(bootstrap, codec, connector)
    assert runner.provider_stats()["flaky"]["state"] == "connecting"

    running = asyncio.ensure_future(runner.run())
    await _until(lambda: connector.sessions == 3, timeout_s=30)
    with pytest.raises(FatalError):
        await running

    stats = runner.provider_stats()["flaky"]
    assert stats["state"] == "down" and stats["last_error"] == "flaky refused the API key (402)"
    assert stats["errors"] == {
        "transient:TransientError": 2,
        "rejected:malformed_trade": 2,
        "fatal:FatalError": 1,
    }
    assert (stats["reconnects"], stats["instruments_served"], stats["trades_published"]) == (
        2,
        2,
        4,
    )
    assert 0 <= stats["last_data_age_s"] < 30


class _RefusedAfterData(Connector):
    """One session of 250 trades in five frames, then the provider refuses for good."""

    name: ClassVar[str] = "refused"
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    async def stream(self) -> AsyncIterator[Record | Rejected]:
        for frame in range(5):
            ts = T0 + frame * 50_000 + np.arange(50, dtype=np.int64) * 1000
            yield TradeBatch(
                source=self.name,
                instruments=("AAPL", "MSFT"),
                instrument_index=(np.arange(50) % 2).astype(np.int32),
                ts_event_us=ts,
                ts_recv_us=ts + 700,
                price=187.25 + np.arange(50) * 0.01,
                size=np.full(50, 100.0),
            )
        raise FatalError("refused subscribes for good (406)")


async def test_a_fatal_error_still_publishes_what_the_feed_yielded_before_it(
    bootstrap: str, codec: Codec
) -> None:
    """The run raises the feed's fatal error only after the trades still lingering in the
    batcher are published and acknowledged (a lingering minute: only that flush sends them)."""
    runner = _runner(
        bootstrap,
        codec,
        _RefusedAfterData(ConnectorConfig()),
        batch_max_trades=10_000,
        linger_ms=60_000,
    )

    with pytest.raises(FatalError, match="406"):
        await asyncio.wait_for(runner.run(), timeout=60)

    assert runner.summary.published == 250  # acknowledged before run() returned

    def trades(messages: list[Message]) -> int:
        return sum(len(codec.decode_trade_batch(m.value())) for m in messages)

    assert trades(read_topic(bootstrap, TRADES, lambda ms: trades(ms) >= 250)) == 250


async def test_a_failing_linger_ends_the_run_with_its_error_after_the_flush(
    bootstrap: str, codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task that publishes lingering batches failing ends the run (nothing else would
    publish while the feed went on): its error is raised once what the feed yielded is
    flushed."""
    feed = _Slow("AAPL", close_s=0.0)
    runner = _runner(bootstrap, codec, feed, linger_ms=60_000)
    running = asyncio.ensure_future(runner.run())
    await _until(lambda: runner.feed.last_data_us is not None, timeout_s=30)

    def broken(now_s: float | None = None) -> list[tuple[int, TradeBatch]]:
        raise RuntimeError("the linger broke")

    monkeypatch.setattr(runner.batcher, "due", broken)

    with pytest.raises(RuntimeError, match="the linger broke"):
        await asyncio.wait_for(running, timeout=30)
    assert runner.summary.published >= 1  # drained from the batcher and acknowledged
